//! Secrets encrypted at rest: every Secret is sealed before it enters the Raft log, and is
//! sealed again in the state machine's sled tree and in snapshots; only the in-memory state
//! holds it in the clear. A sealed object is a JSON string in Kubernetes' envelope format,
//! `k8s:enc:aesgcm:v1:KEYNAME:` followed by the base64 of a 12-byte random nonce and the
//! AES-256-GCM ciphertext of the object's JSON (tag included).
//!
//! The whole object is sealed, metadata included: `kubectl apply` leaves a Secret's data in
//! the `last-applied-configuration` annotation.
//!
//! As Kubernetes' EncryptionConfiguration: the first provider seals new writes, every provider
//! opens what it recognises, and `identity` (no encryption) reads objects written before
//! encryption was turned on. A member without the key a sealed object names stops with an
//! error rather than serving it wrong.
use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use crate::{Op, Proposal};

const PREFIX: &str = "k8s:enc:aesgcm:v1:";
/// Keys under this prefix hold Secrets (see [`crate::object_key`]).
const SECRETS: &str = "secrets/";

/// One provider of an EncryptionConfiguration, in order of preference.
pub enum Provider {
    /// AES-256-GCM with a named 32-byte key.
    AesGcm { name: String, key: [u8; 32] },
    /// No encryption: writes stay clear (if first), clear objects are read.
    Identity,
}

/// Seals and opens Secrets with the configured providers.
pub struct Sealer {
    /// The named keys, in the providers' order.
    keys: Vec<(String, LessSafeKey)>,
    /// Whether new writes are sealed (the first provider is a key, not `identity`).
    seals: bool,
    rng: SystemRandom,
}

// Hand-written so no key material can reach a log line.
impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Sealer")
            .field("keys", &names)
            .field("seals", &self.seals)
            .finish()
    }
}

// Hand-written so no key reaches a log line or a test failure.
impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provider::AesGcm { name, .. } => write!(f, "AesGcm({name})"),
            Provider::Identity => f.write_str("Identity"),
        }
    }
}

/// Why a sealed object cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{key}: sealed with key {name:?}, which this member's encryption configuration does not have")]
    UnknownKey { key: String, name: String },
    #[error("{key}: the sealed object does not open (wrong key or damaged)")]
    Damaged { key: String },
}

impl Sealer {
    /// No encryption at all (tests, and stores that are not a cluster's).
    pub fn identity() -> Arc<Sealer> {
        Arc::new(Sealer {
            keys: Vec::new(),
            seals: false,
            rng: SystemRandom::new(),
        })
    }

    pub fn new(providers: Vec<Provider>) -> Arc<Sealer> {
        let seals = matches!(providers.first(), Some(Provider::AesGcm { .. }));
        let keys = providers
            .into_iter()
            .filter_map(|p| match p {
                Provider::AesGcm { name, key } => UnboundKey::new(&AES_256_GCM, &key)
                    .ok()
                    .map(|k| (name, LessSafeKey::new(k))),
                Provider::Identity => None,
            })
            .collect();
        Arc::new(Sealer {
            keys,
            seals,
            rng: SystemRandom::new(),
        })
    }

    fn applies(key: &str) -> bool {
        key.starts_with(SECRETS)
    }

    /// The object as it goes to disk or into the log: sealed if it is a Secret and new writes
    /// are sealed, borrowed as it is otherwise (no copy on the hot path).
    pub fn seal<'a>(&self, key: &str, object: &'a Value) -> Cow<'a, Value> {
        if !self.seals || !Self::applies(key) || object.is_string() {
            return Cow::Borrowed(object);
        }
        Cow::Owned(self.seal_now(key, object))
    }

    fn seal_now(&self, key: &str, object: &Value) -> Value {
        let Some((name, sealing)) = self.keys.first() else {
            return object.clone();
        };
        let mut nonce = [0u8; NONCE_LEN];
        let mut data = match serde_json::to_vec(object) {
            Ok(data) => data,
            Err(_) => return object.clone(),
        };
        if self.rng.fill(&mut nonce).is_err()
            || sealing
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(key.as_bytes()),
                    &mut data,
                )
                .is_err()
        {
            // Without randomness nothing can be sealed safely; the write fails loudly instead
            // of going to disk in the clear.
            return Value::String(format!("{PREFIX}{name}:unsealable"));
        }
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&data);
        Value::String(format!(
            "{PREFIX}{name}:{}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        ))
    }

    /// The object as memory holds it: opened if sealed, as it is otherwise. The key is bound
    /// into the seal, so a sealed Secret moved under another key does not open.
    pub fn open(&self, key: &str, value: &Value) -> Result<Value, SealError> {
        let Some(text) = value.as_str() else {
            return Ok(value.clone());
        };
        let Some(rest) = text.strip_prefix(PREFIX) else {
            return Ok(value.clone());
        };
        let (name, encoded) = rest.split_once(':').unwrap_or((rest, ""));
        let opening = self
            .keys
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k)
            .ok_or_else(|| SealError::UnknownKey {
                key: key.to_string(),
                name: name.to_string(),
            })?;
        let damaged = || SealError::Damaged {
            key: key.to_string(),
        };
        let blob = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| damaged())?;
        if blob.len() < NONCE_LEN {
            return Err(damaged());
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?;
        let mut sealed = sealed.to_vec();
        let plain = opening
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut sealed)
            .map_err(|_| damaged())?;
        serde_json::from_slice(plain).map_err(|_| damaged())
    }

    /// A proposal with its Secrets sealed (what goes into the Raft log).
    pub fn seal_proposal(&self, proposal: Proposal) -> Proposal {
        if !self.seals {
            return proposal;
        }
        let seal_op = |op: Op| match op {
            Op::Create { key, object } => {
                let object = self.seal(&key, &object).into_owned();
                Op::Create { key, object }
            }
            Op::Update {
                key,
                object,
                expected_revision,
            } => {
                let object = self.seal(&key, &object).into_owned();
                Op::Update {
                    key,
                    object,
                    expected_revision,
                }
            }
            other => other,
        };
        match proposal {
            Proposal::One(op) => Proposal::One(seal_op(op)),
            Proposal::Atomic(ops) => Proposal::Atomic(ops.into_iter().map(seal_op).collect()),
        }
    }

    /// A proposal from the log with its Secrets opened (what `apply` works on), or `None` if
    /// it holds no sealed object.
    pub fn open_proposal(&self, proposal: &Proposal) -> Result<Option<Proposal>, SealError> {
        let sealed = |op: &Op| matches!(op, Op::Create { object, .. } | Op::Update { object, .. } if object.is_string());
        let any = match proposal {
            Proposal::One(op) => sealed(op),
            Proposal::Atomic(ops) => ops.iter().any(sealed),
        };
        if !any {
            return Ok(None);
        }
        let open_op = |op: &Op| -> Result<Op, SealError> {
            Ok(match op {
                Op::Create { key, object } => Op::Create {
                    key: key.clone(),
                    object: self.open(key, object)?,
                },
                Op::Update {
                    key,
                    object,
                    expected_revision,
                } => Op::Update {
                    key: key.clone(),
                    object: self.open(key, object)?,
                    expected_revision: *expected_revision,
                },
                other => other.clone(),
            })
        };
        Ok(Some(match proposal {
            Proposal::One(op) => Proposal::One(open_op(op)?),
            Proposal::Atomic(ops) => {
                Proposal::Atomic(ops.iter().map(open_op).collect::<Result<_, _>>()?)
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sealer(name: &str, byte: u8) -> Arc<Sealer> {
        Sealer::new(vec![
            Provider::AesGcm {
                name: name.into(),
                key: [byte; 32],
            },
            Provider::Identity,
        ])
    }

    #[test]
    fn secrets_are_sealed_and_open_only_with_their_key_and_place() {
        let secret = json!({"metadata": {"name": "till"}, "data": {"pin": "MTIzNA=="}});
        let key = "secrets/shop/till";
        let s = sealer("key1", 7);
        let sealed = s.seal(key, &secret).into_owned();
        let text = sealed.as_str().expect("a sealed string");
        assert!(text.starts_with("k8s:enc:aesgcm:v1:key1:"), "{text}");
        assert!(!text.contains("MTIzNA"), "no clear data");
        assert_ne!(
            s.seal(key, &secret).into_owned(),
            sealed,
            "a fresh nonce each time"
        );
        assert_eq!(s.open(key, &sealed).expect("opens"), secret);
        assert!(
            matches!(
                s.open("secrets/shop/other", &sealed),
                Err(SealError::Damaged { .. })
            ),
            "bound to its key"
        );
        assert!(matches!(
            sealer("key2", 7).open(key, &sealed),
            Err(SealError::UnknownKey { .. })
        ));
        assert!(matches!(
            sealer("key1", 8).open(key, &sealed),
            Err(SealError::Damaged { .. })
        ));
        // Not a Secret, or written before encryption: as it is.
        let pod = json!({"metadata": {"name": "p"}});
        assert_eq!(*s.seal("pods/shop/p", &pod), pod);
        assert_eq!(s.open(key, &secret).expect("clear"), secret);
        assert_eq!(*Sealer::identity().seal(key, &secret), secret);
    }

    #[test]
    fn proposals_are_sealed_for_the_log_and_opened_for_apply() {
        let s = sealer("key1", 1);
        let secret = json!({"metadata": {"name": "a"}});
        let proposal = Proposal::Atomic(vec![
            Op::Create {
                key: "secrets/ns/a".into(),
                object: secret.clone(),
            },
            Op::Create {
                key: "configmaps/ns/a".into(),
                object: secret.clone(),
            },
        ]);
        let sealed = s.seal_proposal(proposal.clone());
        let Proposal::Atomic(ops) = &sealed else {
            panic!("atomic")
        };
        assert!(matches!(&ops[0], Op::Create { object, .. } if object.is_string()));
        assert!(matches!(&ops[1], Op::Create { object, .. } if object.is_object()));
        assert_eq!(
            s.open_proposal(&sealed).expect("opens"),
            Some(proposal.clone())
        );
        assert_eq!(s.open_proposal(&proposal).expect("clear"), None);
    }
}
