//! Hashing and verifying a 256 MiB artifact, side by side with `sha256sum` on the same file in
//! the same run, and the ed25519 verification rate.
//!
//! Run: `cargo run --release -p floe-runtime --example artifact_bench [-- SIZE_MIB]`
//!
//! Every figure is from page-cached reads (the bundle is read once before timing) and is the
//! best of three runs, so the comparison is of hashing, not of the disk.

#![allow(clippy::expect_used, clippy::unwrap_used)] // A benchmark stops loudly on any failure.

use ed25519_dalek::{Signer, SigningKey};
use floe_wire::artifact::{self, BuildSpec};
use floe_wire::proto::{Fixed, TrustStore, TrustedKey};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let value = f();
        best = best.min(start.elapsed());
        last = Some(value);
    }
    (best, last.unwrap())
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn sha2_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut hasher = Sha256::new();
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

fn main() {
    let size_mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();

    // Incompressible-looking content from a cheap generator (xorshift), written in 1 MiB steps.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = std::io::BufWriter::new(std::fs::File::create(files.join("model.bin")).unwrap());
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size_mib {
        for word in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        out.write_all(&block).unwrap();
    }
    out.flush().unwrap();
    drop(out);

    let key = SigningKey::from_bytes(&[7; 32]);
    let trusted = TrustedKey::new(Fixed(key.verifying_key().to_bytes()));
    let trust = TrustStore::new(vec![trusted.clone()], trusted);
    let bundle = dir.path().join("bench.floe");
    let mut spec = BuildSpec::new("bench", "1.0.0", 1, 1, u64::MAX / 2);
    spec.min_runtime = "0.1.0".into();
    let start = Instant::now();
    let manifest = artifact::build(&spec, b"{}", Some(&files), &[&key], &bundle).unwrap();
    let build_time = start.elapsed();
    let bundle_len = std::fs::metadata(&bundle).unwrap().len();
    println!(
        "artifact: {} MiB payload, {} chunks of {} bytes, bundle {} bytes (built and signed in {:.2} s)",
        size_mib,
        manifest.chunks.len(),
        manifest.chunk_size,
        bundle_len,
        build_time.as_secs_f64()
    );

    // Warm the page cache so every contender reads from memory.
    let _ = sha2_file(&bundle);

    let have_sha256sum = Command::new("sha256sum").arg("--version").output().is_ok();
    let sha256sum = have_sha256sum.then(|| {
        best_of(3, || {
            let o = Command::new("sha256sum").arg(&bundle).output().unwrap();
            assert!(o.status.success());
        })
        .0
    });
    let (plain, _) = best_of(3, || sha2_file(&bundle));
    let (verify, verified) = best_of(3, || artifact::verify_file(&bundle, &trust).unwrap());
    assert_eq!(verified.value, manifest);

    println!("hashing the same {bundle_len}-byte bundle, best of 3:");
    if let Some(t) = sha256sum {
        println!(
            "  sha256sum (coreutils)              {:>8.1} MiB/s  {:.3} s",
            mib_per_s(bundle_len, t),
            t.as_secs_f64()
        );
    } else {
        println!("  sha256sum                          not installed; no comparison");
    }
    println!(
        "  sha2 crate, one pass               {:>8.1} MiB/s  {:.3} s",
        mib_per_s(bundle_len, plain),
        plain.as_secs_f64()
    );
    println!(
        "  floe verify (signatures, every chunk, total digest) {:>8.1} MiB/s  {:.3} s",
        mib_per_s(bundle_len, verify),
        verify.as_secs_f64()
    );
    if let Some(t) = sha256sum {
        println!(
            "  ratio vs sha256sum: one pass {:.2}x, full verify {:.2}x (target >= 0.90x)",
            t.as_secs_f64() / plain.as_secs_f64(),
            t.as_secs_f64() / verify.as_secs_f64()
        );
    }

    // ed25519: strict verification of a manifest-sized message.
    let message = vec![0x5au8; 10_000];
    let signature = key.sign(&message);
    let public = key.verifying_key();
    let n = 2_000u32;
    let (t, _) = best_of(3, || {
        for _ in 0..n {
            public.verify_strict(&message, &signature).unwrap();
        }
    });
    println!(
        "ed25519 verify_strict over 10 000-byte messages: {:.0} verifications/s ({:.1} us each)",
        f64::from(n) / t.as_secs_f64(),
        t.as_secs_f64() * 1e6 / f64::from(n)
    );
}
