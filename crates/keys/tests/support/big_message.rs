//! A message far larger than the memory a streamed signature may use, fed in 1 MiB pieces
//! from one buffer, and the process's peak resident set to check that it was never held.

use std::io;

use stella_keys::stream::{MessageSource, StreamVerifier};
use stella_keys::Signer;

/// `mib` MiB of a fixed pattern; `flip` changes one byte (a different message).
pub(crate) struct BigMessage {
    pub(crate) mib: usize,
    pub(crate) flip: bool,
    pub(crate) feeds: usize,
}

impl BigMessage {
    pub(crate) fn new(mib: usize) -> Self {
        BigMessage {
            mib,
            flip: false,
            feeds: 0,
        }
    }
}

impl MessageSource for BigMessage {
    fn feed(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        self.feeds += 1;
        let mut piece: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        for n in 0..self.mib {
            if self.flip && n == self.mib / 2 {
                piece[7] ^= 1;
                f(&piece);
                piece[7] ^= 1;
            } else {
                f(&piece);
            }
        }
        Ok(())
    }
}

/// The process's peak resident set so far (`VmHWM`), in MiB.
pub(crate) fn peak_rss_mib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// `signer` signs a 384 MiB stream reading it once, with the peak RSS raised by less than
/// 64 MiB; the signature verifies over the stream and not over a one-bit-different one.
pub(crate) fn assert_signs_big_stream_in_bounded_memory(signer: &dyn Signer) {
    let before = peak_rss_mib();
    let mut msg = BigMessage::new(384);
    let sig = signer.sign_stream(&mut msg).unwrap();
    let grew = peak_rss_mib().saturating_sub(before);
    assert_eq!(msg.feeds, 1);
    assert!(
        grew < 64,
        "signing a 384 MiB stream raised the peak RSS by {grew} MiB"
    );
    let mut again = BigMessage::new(384);
    assert!(StreamVerifier::new(&mut again)
        .verify(signer.public_key(), &sig)
        .unwrap());
    let mut other = BigMessage::new(384);
    other.flip = true;
    assert!(!StreamVerifier::new(&mut other)
        .verify(signer.public_key(), &sig)
        .unwrap());
}
