//! SHA-256 engines side by side: aws-lc (a heap context per hasher) and `sha2` (the state
//! on the stack, `Hasher`'s engine), on 1 KiB and 1 MiB messages, alternated, the best of 12
//! rounds each. `cargo run --release -p stella-digest --example sha256_engines`.
use std::time::{Duration, Instant};
fn main() {
    for &size in &[1024usize, 1 << 20] {
        let data = vec![7u8; size];
        let iters = (256usize << 20) / size;
        let (mut ma, mut mb) = (Duration::MAX, Duration::MAX);
        let mut x = 0u8;
        for _ in 0..12 {
            let t = Instant::now();
            for _ in 0..iters {
                let mut c = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
                c.update(&data);
                x ^= c.finish().as_ref()[0];
            }
            ma = ma.min(t.elapsed());
            let t = Instant::now();
            for _ in 0..iters {
                use sha2::Digest as _;
                let mut c = sha2::Sha256::new();
                c.update(&data);
                x ^= c.finalize()[0];
            }
            mb = mb.min(t.elapsed());
        }
        println!("size {size}: min of 12, 256 MiB: aws-lc {ma:?} sha2 {mb:?} ({x})");
    }
}
