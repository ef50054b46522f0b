//! Secrets encrypted at rest: every Secret is sealed before it enters the Raft log, and is
//! sealed again in the state machine's sled tree and in snapshots; only the in-memory state
//! holds it in the clear. A sealed object is a JSON string in Kubernetes' envelope format,
//! `k8s:enc:PROVIDER:v1:KEYNAME:` followed by the base64 of a random nonce and the ciphertext
//! of the object's JSON:
//!
//! | provider | cipher | nonce | the store key bound in |
//! |---|---|---|---|
//! | `aesgcm` | AES-256-GCM (ring), tag appended | 12 bytes | as additional data |
//! | `secretbox` | XSalsa20-Poly1305 (NaCl's secretbox), tag prepended | 24 bytes | at the head of the plaintext (secretbox takes no additional data) |
//!
//! The whole object is sealed, metadata included: `kubectl apply` leaves a Secret's data in
//! the `last-applied-configuration` annotation.
//!
//! As Kubernetes' EncryptionConfiguration: the first provider seals new writes, every provider
//! opens what it recognises, and `identity` (no encryption) reads objects written before
//! encryption was turned on. A member without the key a sealed object names stops with an
//! error rather than serving it wrong. The keys can be replaced while the store runs
//! ([`Sealer::replace`]): key rotation adds a key everywhere, makes it the first, and rewrites
//! every Secret, without a restart.
use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use base64::Engine;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use crate::{Op, Proposal};

const AESGCM: &str = "k8s:enc:aesgcm:v1:";
const SECRETBOX: &str = "k8s:enc:secretbox:v1:";
/// secretbox's nonce: XSalsa20's 24 bytes, random for each seal.
const SECRETBOX_NONCE: usize = 24;
/// Keys under this prefix hold Secrets (see [`crate::object_key`]).
const SECRETS: &str = "secrets/";

/// One provider of an EncryptionConfiguration, in order of preference.
#[derive(Clone)]
pub enum Provider {
    /// AES-256-GCM with a named 32-byte key.
    AesGcm { name: String, key: [u8; 32] },
    /// XSalsa20-Poly1305 (NaCl secretbox) with a named 32-byte key.
    SecretBox { name: String, key: [u8; 32] },
    /// No encryption: writes stay clear (if first), clear objects are read.
    Identity,
}

impl Provider {
    /// The key's name, or `None` for `identity`.
    pub fn name(&self) -> Option<&str> {
        match self {
            Provider::AesGcm { name, .. } | Provider::SecretBox { name, .. } => Some(name),
            Provider::Identity => None,
        }
    }
}

/// A named key, ready to seal and open (a handful per cluster: the size of ring's AES key
/// schedule does not matter).
#[allow(clippy::large_enum_variant)]
enum Key {
    AesGcm(LessSafeKey),
    SecretBox(XSalsa20Poly1305),
}

impl Key {
    fn prefix(&self) -> &'static str {
        match self {
            Key::AesGcm(_) => AESGCM,
            Key::SecretBox(_) => SECRETBOX,
        }
    }
}

/// The keys in the providers' order, and whether new writes are sealed.
struct Keyring {
    keys: Vec<(String, Key)>,
    /// Whether new writes are sealed (the first provider is a key, not `identity`).
    seals: bool,
}

impl Keyring {
    fn of(providers: Vec<Provider>) -> Keyring {
        let seals = providers.first().is_some_and(|p| p.name().is_some());
        let keys = providers
            .into_iter()
            .filter_map(|p| match p {
                Provider::AesGcm { name, key } => UnboundKey::new(&AES_256_GCM, &key)
                    .ok()
                    .map(|k| (name, Key::AesGcm(LessSafeKey::new(k)))),
                Provider::SecretBox { name, key } => {
                    Some((name, Key::SecretBox(XSalsa20Poly1305::new(&key.into()))))
                }
                Provider::Identity => None,
            })
            .collect();
        Keyring { keys, seals }
    }
}

/// Seals and opens Secrets with the configured providers.
pub struct Sealer {
    ring: RwLock<Keyring>,
    rng: SystemRandom,
}

// Hand-written so no key material can reach a log line.
impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.key_names())
            .field("seals", &self.keyring().seals)
            .finish()
    }
}

// Hand-written so no key reaches a log line or a test failure.
impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provider::AesGcm { name, .. } => write!(f, "AesGcm({name})"),
            Provider::SecretBox { name, .. } => write!(f, "SecretBox({name})"),
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
        Sealer::new(Vec::new())
    }

    pub fn new(providers: Vec<Provider>) -> Arc<Sealer> {
        Arc::new(Sealer {
            ring: RwLock::new(Keyring::of(providers)),
            rng: SystemRandom::new(),
        })
    }

    fn keyring(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        // Nothing panics while holding the lock; carry on with the keys if something did.
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes new providers from now on (key rotation). The caller makes sure they still open
    /// everything the old ones sealed.
    pub fn replace(&self, providers: Vec<Provider>) {
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Keyring::of(providers);
    }

    /// The key names, in order; the first seals new writes if [`Sealer::seals`].
    pub fn key_names(&self) -> Vec<String> {
        self.keyring().keys.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Whether new writes are sealed.
    pub fn seals(&self) -> bool {
        self.keyring().seals
    }

    fn applies(key: &str) -> bool {
        key.starts_with(SECRETS)
    }

    /// The object as it goes to disk or into the log: sealed if it is a Secret and new writes
    /// are sealed, borrowed as it is otherwise (no copy on the hot path).
    pub fn seal<'a>(&self, key: &str, object: &'a Value) -> Cow<'a, Value> {
        if !Self::applies(key) || object.is_string() {
            return Cow::Borrowed(object);
        }
        let ring = self.keyring();
        if !ring.seals {
            return Cow::Borrowed(object);
        }
        Cow::Owned(self.seal_now(&ring, key, object))
    }

    fn seal_now(&self, ring: &Keyring, key: &str, object: &Value) -> Value {
        let Some((name, sealing)) = ring.keys.first() else {
            return object.clone();
        };
        let Ok(data) = serde_json::to_vec(object) else {
            return object.clone();
        };
        let blob = match sealing {
            Key::AesGcm(aes) => {
                let mut nonce = [0u8; NONCE_LEN];
                let mut data = data;
                self.rng.fill(&mut nonce).ok().and_then(|()| {
                    aes.seal_in_place_append_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(key.as_bytes()),
                        &mut data,
                    )
                    .ok()?;
                    let mut blob = nonce.to_vec();
                    blob.extend_from_slice(&data);
                    Some(blob)
                })
            }
            Key::SecretBox(secretbox) => {
                let mut nonce = [0u8; SECRETBOX_NONCE];
                let mut plain = Vec::with_capacity(key.len() + 1 + data.len());
                plain.extend_from_slice(key.as_bytes());
                plain.push(0);
                plain.extend_from_slice(&data);
                self.rng.fill(&mut nonce).ok().and_then(|()| {
                    let sealed = secretbox.encrypt(&nonce.into(), plain.as_slice()).ok()?;
                    let mut blob = nonce.to_vec();
                    blob.extend_from_slice(&sealed);
                    Some(blob)
                })
            }
        };
        let prefix = sealing.prefix();
        match blob {
            Some(blob) => Value::String(format!(
                "{prefix}{name}:{}",
                base64::engine::general_purpose::STANDARD.encode(blob)
            )),
            // Without randomness nothing can be sealed safely; the write fails loudly instead
            // of going to disk in the clear.
            None => Value::String(format!("{prefix}{name}:unsealable")),
        }
    }

    /// The object as memory holds it: opened if sealed, as it is otherwise. The key is bound
    /// into the seal, so a sealed Secret moved under another key does not open.
    pub fn open(&self, key: &str, value: &Value) -> Result<Value, SealError> {
        let Some(text) = value.as_str() else {
            return Ok(value.clone());
        };
        let Some((prefix, rest)) = [AESGCM, SECRETBOX]
            .iter()
            .find_map(|p| text.strip_prefix(p).map(|rest| (*p, rest)))
        else {
            return Ok(value.clone());
        };
        let (name, encoded) = rest.split_once(':').unwrap_or((rest, ""));
        let ring = self.keyring();
        let opening = ring
            .keys
            .iter()
            .find(|(n, k)| n == name && k.prefix() == prefix)
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
        match opening {
            Key::AesGcm(aes) => {
                if blob.len() < NONCE_LEN {
                    return Err(damaged());
                }
                let (nonce, sealed) = blob.split_at(NONCE_LEN);
                let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?;
                let mut sealed = sealed.to_vec();
                let plain = aes
                    .open_in_place(nonce, Aad::from(key.as_bytes()), &mut sealed)
                    .map_err(|_| damaged())?;
                serde_json::from_slice(plain).map_err(|_| damaged())
            }
            Key::SecretBox(secretbox) => {
                if blob.len() < SECRETBOX_NONCE {
                    return Err(damaged());
                }
                let (nonce, sealed) = blob.split_at(SECRETBOX_NONCE);
                let nonce: [u8; SECRETBOX_NONCE] = nonce.try_into().map_err(|_| damaged())?;
                let plain = secretbox
                    .decrypt(&nonce.into(), sealed)
                    .map_err(|_| damaged())?;
                let data = plain
                    .strip_prefix(key.as_bytes())
                    .and_then(|rest| rest.strip_prefix(&[0]))
                    .ok_or_else(damaged)?;
                serde_json::from_slice(data).map_err(|_| damaged())
            }
        }
    }

    /// A proposal with its Secrets sealed (what goes into the Raft log).
    pub fn seal_proposal(&self, proposal: Proposal) -> Proposal {
        if !self.seals() {
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
    fn secretbox_seals_too_and_keys_can_be_replaced_while_running() {
        let secret = json!({"metadata": {"name": "till"}, "data": {"pin": "MTIzNA=="}});
        let key = "secrets/shop/till";
        let boxed = Provider::SecretBox {
            name: "box1".into(),
            key: [9; 32],
        };
        let s = Sealer::new(vec![boxed.clone(), Provider::Identity]);
        let sealed = s.seal(key, &secret).into_owned();
        let text = sealed.as_str().expect("a sealed string");
        assert!(text.starts_with("k8s:enc:secretbox:v1:box1:"), "{text}");
        assert!(!text.contains("MTIzNA"), "no clear data");
        assert_eq!(s.open(key, &sealed).expect("opens"), secret);
        assert!(
            matches!(
                s.open("secrets/shop/other", &sealed),
                Err(SealError::Damaged { .. })
            ),
            "bound to its key"
        );
        // Rotation: an AES key first, the secretbox key kept to read what it sealed.
        let aes = Provider::AesGcm {
            name: "key2".into(),
            key: [3; 32],
        };
        s.replace(vec![aes, boxed, Provider::Identity]);
        assert_eq!(s.key_names(), vec!["key2", "box1"]);
        assert_eq!(s.open(key, &sealed).expect("old seals still open"), secret);
        let resealed = s.seal(key, &secret).into_owned();
        assert!(resealed
            .as_str()
            .is_some_and(|t| t.starts_with("k8s:enc:aesgcm:v1:key2:")));
        // A key name under the other provider's prefix is not that key.
        let forged = Value::String(text.replace("secretbox:v1:box1", "aesgcm:v1:box1"));
        assert!(matches!(
            s.open(key, &forged),
            Err(SealError::UnknownKey { .. })
        ));
        s.replace(vec![Provider::Identity]);
        assert!(!s.seals());
        assert_eq!(*s.seal(key, &secret), secret);
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
