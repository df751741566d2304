//! `mountctl watch`: the status, refreshed, with rates since the last one.
//! Only reads the mount's statistics.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use contract::json::Stats;

use crate::exit::Exit;
use crate::render::print_status;
use crate::{one_mount, stats_of, Fatal};

pub fn watch(mount: Option<&Path>, interval: Duration, count: Option<u64>) -> Result<Exit, Fatal> {
    let m = one_mount(mount)?;
    let stop = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone());
    let terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let raw = terminal.then(RawInput::enable).flatten();
    let (mut last, mut last_t) = (None::<Stats>, Instant::now());
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && count.is_none_or(|c| n < c) {
        let s = stats_of(&m)?;
        if terminal {
            print!("\x1b[2J\x1b[H");
        }
        print_status(&m, &s);
        if let Some(prev) = &last {
            let dt = last_t.elapsed().as_secs_f64().max(1e-3);
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
            let (t, p) = (&s.tiers, &prev.tiers);
            println!(
                "  migrations {:.1}/s; reads hot {:.0}/s, warm {:.0}/s, cold {:.0}/s",
                rate(s.migrations.done, prev.migrations.done),
                rate(t.hot.hits, p.hot.hits),
                rate(t.warm.hits, p.warm.hits),
                rate(t.cold.hits, p.cold.hits),
            );
        }
        if terminal {
            println!("  (q or Ctrl-C to quit)");
        }
        last = Some(s);
        last_t = Instant::now();
        n += 1;
        let until = Instant::now() + interval;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            if raw.as_ref().is_some_and(|r| r.pressed_q()) {
                stop.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(raw);
    Ok(Exit::Ok)
}

/// The terminal in non-canonical mode (to see a q), restored on drop.
struct RawInput {
    saved: libc::termios,
}

impl RawInput {
    fn enable() -> Option<RawInput> {
        // SAFETY: tcgetattr/tcsetattr on stdin with a zeroed termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO);
            t.c_cc[libc::VMIN] = 0;
            t.c_cc[libc::VTIME] = 0;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Some(RawInput { saved })
        }
    }

    fn pressed_q(&self) -> bool {
        let mut b = [0u8; 16];
        // SAFETY: reading into a local buffer; stdin is non-blocking (VMIN 0).
        let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
        n > 0 && b[..n as usize].iter().any(|c| *c == b'q' || *c == b'Q')
    }
}

impl Drop for RawInput {
    fn drop(&mut self) {
        // SAFETY: restoring the settings saved in enable().
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}
