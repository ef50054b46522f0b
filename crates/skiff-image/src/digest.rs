//! sha256 digests — the names of everything in an OCI image — and layer chain IDs.
use std::io::{self, Write};

use ring::digest::{Context, SHA256};

/// `sha256:<hex>` of some bytes: how OCI names a blob.
pub fn sha256(bytes: &[u8]) -> String {
    let mut hasher = Sha256Writer::new(io::sink());
    hasher.update(bytes);
    hasher.finish().0
}

/// The chain IDs of a stack of layers, bottom first.
///
/// A layer's diffID names its own changes; its chain ID names the whole filesystem up to and
/// including it, so two images sharing their first layers share those snapshots:
///
/// ```text
/// chain[0] = diffID[0]
/// chain[i] = sha256(chain[i-1] + " " + diffID[i])
/// ```
///
/// containerd names each committed snapshot by its chain ID, which is how an import finds
/// the layers it has already unpacked.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => sha256(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

/// A writer that hashes everything passing through it, so a layer is digested while it is
/// written instead of being read back afterwards.
pub struct Sha256Writer<W> {
    inner: W,
    context: Context,
    written: u64,
}

impl<W> Sha256Writer<W> {
    pub fn new(inner: W) -> Self {
        Sha256Writer {
            inner,
            context: Context::new(&SHA256),
            written: 0,
        }
    }

    /// Hashes bytes without writing them.
    pub fn update(&mut self, bytes: &[u8]) {
        self.context.update(bytes);
        self.written += bytes.len() as u64;
    }

    /// The digest (`sha256:<hex>`) and size of everything written, and the inner writer back.
    pub fn finish(self) -> (String, u64, W) {
        let digest = format!("sha256:{}", hex::encode(self.context.finish().as_ref()));
        (digest, self.written, self.inner)
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_is_the_well_known_one() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn chain_ids_follow_the_oci_formula() {
        let a = sha256(b"a");
        let b = sha256(b"b");
        let c = sha256(b"c");
        let chain = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        let ab = sha256(format!("{a} {b}").as_bytes());
        let abc = sha256(format!("{ab} {c}").as_bytes());
        assert_eq!(chain, vec![a, ab, abc]);
        assert!(chain_ids(&[]).is_empty());
    }
}
