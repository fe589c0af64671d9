//! Cortex-M4F firmware: streams embedded ECG5000 windows (of the model's length and of two
//! others) sample by sample through the runtime's encoder (bundle in flash, state on the stack,
//! no heap), assigns clusters, prints one line per window, and exits 0 only if every cluster ID
//! equals the host's. A window the model refuses as shorter than its minimum length must be
//! refused on the host too (expected cluster `u32::MAX`).
#![no_std]
#![no_main]

use core::mem::size_of;

use cortex_m_rt::{entry, exception, ExceptionFrame};
use runtime::{EncodeError, Encoder, State};
use semihosting::{println, process};

/// Keeps `include_bytes!` data 4-byte aligned, so the bundle's weights are read in place.
#[repr(C, align(4))]
struct Aligned<T: ?Sized>(T);

static BUNDLE: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.bundle")));
static WINDOWS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/windows.bin"));
static EXPECTED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/expected.bin"));
/// Samples per window (u32 each): the model's length, then two other lengths.
static LENGTHS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lengths.bin"));

/// Capacity compiled into this image: up to 96 hidden units, 1 layer, 32 latent values.
type DeviceState = State<96, 1>;
const LATENT: usize = 32;
const STACK_PAINT: u32 = 0xACAC_ACAC;
/// The expected cluster of a window the host refused as too short (see build.rs).
const TOO_SHORT: usize = u32::MAX as usize;

extern "C" {
    static mut __sheap: u32;
    static _stack_start: u32;
}

fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// Fills the unused stack (from the end of .bss up to just below the current stack pointer)
/// with a pattern; `stack_high_water` later finds how far the stack reached.
fn paint_stack() {
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = core::ptr::addr_of_mut!(__sheap) as usize;
    while p + 64 < sp {
        // SAFETY: the region between the heap start and the live stack is unused RAM.
        unsafe { core::ptr::write_volatile(p as *mut u32, STACK_PAINT) };
        p += 4;
    }
}

fn stack_high_water() -> usize {
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let mut p = core::ptr::addr_of_mut!(__sheap) as usize;
    // SAFETY: reads RAM painted by `paint_stack`.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == STACK_PAINT {
        p += 4;
    }
    top - p
}

/// SysTick as a counter of the processor clock. Under `qemu -icount shift=0` every instruction
/// takes 1 ns of virtual time, so clock ticks convert to instructions by a factor that
/// `calibrate` measures with a loop of known length.
fn start_systick(syst: &mut cortex_m::peripheral::SYST) {
    syst.set_clock_source(cortex_m::peripheral::syst::SystClkSource::Core);
    syst.set_reload(0x00FF_FFFF);
    syst.clear_current();
    syst.enable_counter();
}

/// Ticks elapsed since `start` on the 24-bit down-counter (one wrap at most).
fn ticks_since(start: u32) -> u32 {
    let now = cortex_m::peripheral::SYST::get_current();
    start.wrapping_sub(now) & 0x00FF_FFFF
}

/// Instructions per 1000 SysTick ticks: `cortex_m::asm::delay(n)` runs a 2-instruction loop n/2
/// times, i.e. n instructions.
fn calibrate() -> u32 {
    const N: u32 = 2_000_000;
    let t0 = cortex_m::peripheral::SYST::get_current();
    cortex_m::asm::delay(N);
    let dt = ticks_since(t0).max(1);
    (N as u64 * 1000 / dt as u64) as u32
}

#[entry]
fn main() -> ! {
    paint_stack();
    let mut cp = cortex_m::Peripherals::take().expect("peripherals taken once");
    start_systick(&mut cp.SYST);
    let per_kilotick = calibrate();
    let mut total_ticks: u64 = 0;
    let enc = match Encoder::from_bytes(&BUNDLE.0) {
        Ok(e) => e,
        Err(e) => {
            println!("bundle rejected: {}", e);
            process::exit(2)
        }
    };
    let hd = enc.bundle().header;
    let seq_len = hd.seq_len as usize;
    let n = LENGTHS.len() / 4;
    let (mut failures, mut at, mut full) = (0, 0, 0u64);
    for w in 0..n {
        let t = f32_at(LENGTHS, w).to_bits() as usize;
        let mut state = DeviceState::default();
        let t0 = cortex_m::peripheral::SYST::get_current();
        for i in 0..t {
            if let Err(e) = enc.push(&mut state, &[f32_at(WINDOWS, at + i)]) {
                println!("window={} error: {}", w, e);
                process::exit(3);
            }
        }
        let want = f32_at(EXPECTED, 3 * w).to_bits() as usize;
        // The decision uses the latent and the window summary the state streamed.
        let (cluster, dist, anomalous) = match enc.finish::<96, 1, LATENT>(&state).map(|z| enc.decide(&state, &z)) {
            Ok(Ok(a)) => (a.cluster, a.distance, a.anomalous),
            Err(EncodeError::TooShort { steps, min }) => {
                let ok = want == TOO_SHORT;
                failures += usize::from(!ok);
                println!("window={} samples={} too_short min={} expected={} {}", w, steps, min, want, if ok { "ok" } else { "MISMATCH" });
                at += t;
                continue;
            }
            _ => {
                println!("window={} could not be encoded", w);
                process::exit(3)
            }
        };
        at += t;
        // Instructions are reported for windows of the model's length.
        if t == seq_len {
            total_ticks += ticks_since(t0) as u64;
            full += 1;
        }
        // Per window: cluster (u32), distance (f32), anomalous (u32 0/1).
        let want_dist = f32_at(EXPECTED, 3 * w + 1);
        let want_anomalous = f32_at(EXPECTED, 3 * w + 2).to_bits() == 1;
        let ok = cluster == want && anomalous == want_anomalous;
        if !ok {
            failures += 1;
        }
        println!(
            "window={} samples={} cluster={} dist={} anomalous={} expected={} host_dist={} host_anomalous={} {}",
            w,
            t,
            cluster,
            dist,
            anomalous as u8,
            want,
            want_dist,
            want_anomalous as u8,
            if ok { "ok" } else { "MISMATCH" }
        );
    }
    println!("state_bytes_per_device={}", size_of::<DeviceState>());
    if full > 0 {
        // Meaningful when QEMU runs with -icount shift=0 (the runner and the tests do).
        println!(
            "instructions_per_window={} (windows of {} samples; calibrated: {} instructions per 1000 SysTick ticks)",
            total_ticks * per_kilotick as u64 / 1000 / full,
            seq_len,
            per_kilotick
        );
    }
    println!("stack_high_water_bytes={}", stack_high_water());
    println!("windows={} mismatches={}", n, failures);
    process::exit(if failures == 0 { 0 } else { 1 })
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    println!("hard fault at pc={:#x}", ef.pc());
    process::exit(4)
}
