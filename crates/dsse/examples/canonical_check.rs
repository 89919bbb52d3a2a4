//! The canonical-form check over one file, for profiling (`valgrind --tool=callgrind`):
//! `cargo run --release -p stella-dsse --example canonical_check -- FILE [ROUNDS]`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: canonical_check FILE [ROUNDS]")?;
    let rounds: usize = args.next().map_or(Ok(1), |r| r.parse())?;
    let data = std::fs::read(path)?;
    let t = std::time::Instant::now();
    let mut ok = true;
    for _ in 0..rounds {
        ok &= stella_dsse::jcs::is_canonical(std::hint::black_box(&data));
    }
    println!(
        "canonical: {ok}, {} bytes, {:?} per round",
        data.len(),
        t.elapsed() / rounds as u32
    );
    Ok(())
}
