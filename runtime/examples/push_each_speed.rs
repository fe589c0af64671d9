//! Speed of stepping many independent windows by one sample (not a test): `Encoder::push` one
//! window at a time against `batch::push_each`, on the shipped ECG5000 bundle.
//!
//! ```sh
//! cargo run --release -p runtime --features std --example push_each_speed
//! ```

use std::time::Instant;

use runtime::batch::push_each;
use runtime::bundle::AlignedBytes;
use runtime::{Encoder, State};

fn main() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/ecg5000/model.bundle");
    let bytes = AlignedBytes::new(&std::fs::read(path).expect("models/ecg5000/model.bundle"));
    let enc = Encoder::from_bytes(bytes.as_bytes()).expect("valid bundle");
    let n = 64;
    let steps = 2000;
    let xs: Vec<Vec<f32>> = (0..n).map(|i| vec![(i as f32 * 0.37).sin()]).collect();
    println!("| path | windows | ns per window-sample |");
    println!("|---|---|---|");
    let mut one: Vec<State<128, 1>> = vec![State::default(); n];
    let t = Instant::now();
    for _ in 0..steps {
        for (s, x) in one.iter_mut().zip(&xs) {
            enc.push(s, x).unwrap();
        }
        one.iter_mut().for_each(|s| s.reset());
    }
    println!("| Encoder::push | {n} | {:.0} |", t.elapsed().as_nanos() as f64 / (n * steps) as f64);
    let mut many: Vec<State<128, 1>> = vec![State::default(); n];
    let t = Instant::now();
    for _ in 0..steps {
        let mut items: Vec<(&mut State<128, 1>, &[f32])> = many.iter_mut().zip(&xs).map(|(s, x)| (s, x.as_slice())).collect();
        push_each(&enc, &mut items).unwrap();
        drop(items);
        many.iter_mut().for_each(|s| s.reset());
    }
    println!("| batch::push_each | {n} | {:.0} |", t.elapsed().as_nanos() as f64 / (n * steps) as f64);
}
