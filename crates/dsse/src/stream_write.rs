//! Writing a DSSE envelope whose payload is too large to hold in memory.
//!
//! [`write_envelope`] reads the payload from any [`Read`] and writes the envelope document to
//! any [`Write`] as it goes, base64-encoding whole 3-byte groups per buffer (only the last one
//! is padded): memory is one fixed buffer whatever the payload's size. The bytes are exactly
//! those of [`Envelope::to_json`](crate::Envelope::to_json) for the same payload and
//! signatures (`payloadType`, `payload`, `signatures[{keyid, sig}]`, standard padded base64),
//! so a signer may choose either form and produce the same file.

use std::io::{self, Read, Write};

use crate::b64;
use crate::jcs;
use crate::Signature;

/// Payload bytes encoded per step: a multiple of 3, so only the final step pads.
const STEP: usize = 3 * 64 * 1024;

/// Write the envelope of the payload `payload` yields (read to its end), with `signatures`
/// (made over the PAE of the same bytes), to `out`. Returns the payload's length.
pub fn write_envelope<R: Read + ?Sized, W: Write + ?Sized>(
    payload_type: &str,
    payload: &mut R,
    signatures: &[Signature],
    out: &mut W,
) -> io::Result<u64> {
    let mut head = Vec::with_capacity(payload_type.len() + 32);
    head.extend_from_slice(b"{\"payloadType\":");
    jcs::write_str(payload_type, &mut head);
    head.extend_from_slice(b",\"payload\":\"");
    out.write_all(&head)?;
    let mut buf = vec![0u8; STEP];
    let mut text = Vec::with_capacity(STEP / 3 * 4 + 4);
    let mut len: u64 = 0;
    loop {
        let n = fill(payload, &mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        text.clear();
        b64::encode_into_vec(&buf[..n], &mut text);
        out.write_all(&text)?;
        if n < buf.len() {
            break;
        }
    }
    let mut tail = Vec::with_capacity(160 * signatures.len() + 8);
    crate::envelope::write_signatures_tail(signatures, &mut tail);
    out.write_all(&tail)?;
    Ok(len)
}

/// Read until `buf` is full or the input ends; the count read.
fn fill<R: Read + ?Sized>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;

    /// Hands out at most `max` bytes per read.
    struct Trickle<'a> {
        rest: &'a [u8],
        max: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.rest.len().min(buf.len()).min(self.max);
            buf[..n].copy_from_slice(&self.rest[..n]);
            self.rest = &self.rest[n..];
            Ok(n)
        }
    }

    fn sigs(n: usize) -> Vec<Signature> {
        (0..n)
            .map(|i| Signature {
                keyid: format!("sha256:{i}\"\u{1}é"),
                sig: vec![i as u8; 64 + i],
            })
            .collect()
    }

    #[test]
    fn same_bytes_as_the_in_memory_writer() {
        let big: Vec<u8> = (0..(STEP * 2 + 5) as u32).map(|i| (i * 13) as u8).collect();
        for len in [0, 1, 2, 3, 4, STEP - 1, STEP, STEP + 1, STEP * 2 + 5] {
            for max in [usize::MAX, 1000, 7] {
                if max == 7 && len > 5000 {
                    continue;
                }
                for n in [0, 1, 3] {
                    let payload = big[..len].to_vec();
                    let env = Envelope {
                        payload_type: "application/x-t\"ype".into(),
                        payload: payload.clone(),
                        signatures: sigs(n),
                    };
                    let mut out = Vec::new();
                    let mut src = Trickle {
                        rest: &payload,
                        max,
                    };
                    let got =
                        write_envelope(&env.payload_type, &mut src, &env.signatures, &mut out)
                            .unwrap();
                    assert_eq!(got, len as u64);
                    assert!(out == env.to_json(), "len {len} max {max} sigs {n}");
                    assert_eq!(Envelope::from_json(&out).unwrap(), env);
                }
            }
        }
    }

    #[test]
    fn read_and_write_errors_are_returned() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("gone"))
            }
        }
        let e = write_envelope("t", &mut Failing, &[], &mut Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "gone");
        let mut full = [0u8; 10];
        let e = write_envelope("t", &mut &b"abc"[..], &[], &mut &mut full[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }
}
