//! Inference speed on ECG5000 with the shipped model: batch-1 latency (median) and throughput
//! for the runtime's native kernels, onnxruntime, tract and the candle forward pass; and
//! `edge assign` throughput on a generated fleet. Prints a table.
//!
//! `ORT_DYLIB_PATH=... cargo run --release -p tests --bin bench_inference [-- --fleet DEVICES]`

use std::io::Write;
use std::time::Instant;

use runtime::bundle::AlignedBytes;
use runtime::encoder::State;
use runtime::Encoder;
use tests::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `reps` runs of `f`.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let fleet: usize = args.iter().position(|a| a == "--fleet").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(10_000);
    let dir = shipped_model_dir();
    let m = trainer::artifacts::load_model(&dir, &candle_core::Device::Cpu)?;
    let ds = trainer::data::bundled::ecg5000()?;
    let all = &ds.series;
    let one = &all[..1];
    let b256 = &all[..256];
    let bytes = std::fs::read(dir.join("model.bundle"))?;
    let aligned = AlignedBytes::new(&bytes);
    let enc = Encoder::from_bytes(aligned.as_bytes())?;
    let onnx = dir.join("encoder.onnx");
    let threads = rayon::current_num_threads();
    println!("model {} ({:?}, hidden {}), ECG5000, {threads} threads", dir.display(), m.config.model.cell, m.config.model.hidden_size);
    println!("{:<28} {:>14} {:>14} {:>16}", "engine", "batch 1 (ms)", "batch 256 (ms)", "all 5000 (ms)");

    // Batch 1 (one window, 140 steps): the device path (one core, streaming), the two-core path,
    // and onnxruntime with 1 and with all intra-op threads (1 is usually faster for one window).
    // This machine is shared and its speed drifts by 20% within seconds, so the engines take
    // turns: 15 rounds of 200 windows each, and each engine's figure is the median of its
    // round medians (each ratio then compares engines that saw the same conditions).
    let native = m.native()?;
    let mut duo = runtime::duo::DuoEncoder::new(enc)?;
    let mut ort = OrtEncoder::load(&onnx, threads)?;
    let mut ort_one = OrtEncoder::load(&onnx, 1)?;
    let x1 = time_major(one, 140, 1);
    let mut rounds: [Vec<f64>; 4] = Default::default();
    for _ in 0..15 {
        rounds[0].push(time(200, || {
            let mut s = State::<128, 2>::default();
            let _: heapless::Vec<f32, 64> = enc.encode_window(&mut s, &one[0].values).unwrap();
        }));
        rounds[1].push(time(200, || drop(duo.encode_window(&one[0].values).unwrap())));
        rounds[2].push(time(200, || drop(ort_one.run(&x1, 140, 1, 1).unwrap())));
        rounds[3].push(time(200, || drop(ort.run(&x1, 140, 1, 1).unwrap())));
    }
    drop(duo);
    let [n1, d1, o1_one, o1_all] = rounds.map(median);
    let (o1, o1_threads) = if o1_one <= o1_all { (o1_one, 1) } else { (o1_all, threads) };

    let n256 = time(10, || drop(native.embed(b256).unwrap()));
    let nall = time(5, || drop(native.embed(all).unwrap()));
    println!("{:<28} {:>14.3} {:>14.2} {:>16.1}", "native (runtime kernels)", n1 * 1e3, n256 * 1e3, nall * 1e3);
    println!("{:<28} {:>14.3} {:>14} {:>16}", "native, 1 window on 2 cores", d1 * 1e3, "-", "-");

    let x256 = time_major(b256, 140, 1);
    let xall = time_major(all, 140, 1);
    let o256 = time(10, || drop(ort.run(&x256, 140, 256, 1).unwrap()));
    let oall = time(5, || drop(ort.run(&xall, 140, 5000, 1).unwrap()));
    println!("{:<28} {:>14.3} {:>14.2} {:>16.1}", "onnxruntime 1.32", o1_all * 1e3, o256 * 1e3, oall * 1e3);
    println!("{:<28} {:>14.3} {:>14} {:>16}", "onnxruntime 1.32, 1 thread", o1_one * 1e3, "-", "-");

    let t1e = TractEncoder::load(&onnx, 140, 1, 1)?;
    let t256e = TractEncoder::load(&onnx, 140, 256, 1)?;
    let tr1 = time(100, || drop(t1e.run(&x1, 140, 1, 1).unwrap()));
    let tr256 = time(5, || drop(t256e.run(&x256, 140, 256, 1).unwrap()));
    println!("{:<28} {:>14.3} {:>14.2} {:>16}", "tract 0.23.9", tr1 * 1e3, tr256 * 1e3, "-");

    let c1 = time(10, || drop(candle_embed(&m, one).unwrap()));
    let c256 = time(3, || drop(candle_embed(&m, b256).unwrap()));
    println!("{:<28} {:>14.3} {:>14.2} {:>16}", "candle forward (trainer)", c1 * 1e3, c256 * 1e3, "-");
    println!("batch-1 ratios against onnxruntime's faster setting ({o1_threads} thread(s), {:.3} ms):", o1 * 1e3);
    println!("native / onnxruntime batch-1 latency ratio: {:.2} (one core, the device path)", n1 / o1);
    println!("native on 2 cores / onnxruntime batch-1 latency ratio: {:.2}", d1 / o1);
    println!("native all-5000 / onnxruntime all-5000: {:.2}", nall / oall);

    // edge assign throughput on a generated fleet: `fleet` devices x 10 windows, interleaved.
    let path = std::env::temp_dir().join(format!("bench-fleet-{fleet}.csv"));
    if !path.exists() {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path)?);
        writeln!(w, "device_id,timestamp,value")?;
        for step in 0..1400 {
            for d in 0..fleet {
                let s = &all[(d * 7 + step / 140) % all.len()];
                writeln!(w, "d{d},{step},{}", s.values[step % 140])?;
            }
        }
    }
    let exe = std::env::current_exe()?.with_file_name("edge");
    if exe.exists() {
        let out = std::env::temp_dir().join("bench-fleet-ids.csv");
        let t = Instant::now();
        let o = std::process::Command::new(&exe)
            .args([
                "assign",
                "--quiet",
                "--model",
                dir.to_str().unwrap(),
                "--input",
                path.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .output()?;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(o.status.success(), "edge failed: {}", String::from_utf8_lossy(&o.stderr));
        let samples = fleet * 1400;
        println!("edge assign: {fleet} devices x 10 windows ({samples} samples) in {secs:.2} s = {:.0} samples/s", samples as f64 / secs);
    } else {
        println!("edge assign: build it first (cargo build --release -p edge) to measure fleet throughput");
    }
    Ok(())
}
