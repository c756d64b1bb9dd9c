//! Every plugin call ends at its deadline: one that computes is interrupted by the epoch
//! ticker (a trap) once it has also used CPU past it, one that waits in a host call (a WASI
//! sleep or poll) is cut off by a timer, which drops the call. Calls run on the caller's own
//! thread; one background thread for the process drives the timers.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

/// The timer driver of plugin calls: a runtime whose one worker only keeps time.
static TIMERS: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("edge-plugin-timers")
        .enable_time()
        .build()
        .expect("starting the plugin timer thread")
});

/// The call did not finish within its deadline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overran;

/// Runs `call` on this thread until it finishes or `deadline` has passed. Must not be called
/// from async code (plugin calls run on plugin threads and blocking threads).
///
/// A call that computes and returns finishes in its first poll: it needs no timer (arming one
/// on the timer thread costs more than an ATI message's translation). Only a call that waits
/// in a host call gets one, for what is left of its deadline.
pub fn run<F: Future>(deadline: Duration, call: F) -> Result<F::Output, Overran> {
    let started = std::time::Instant::now();
    let mut call = std::pin::pin!(call);
    {
        // Host calls that wait (WASI sleeps) register with the timer runtime, even in this poll.
        let _context = TIMERS.enter();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(output) = call.as_mut().poll(&mut cx) {
            return Ok(output);
        }
    }
    let left = deadline.saturating_sub(started.elapsed());
    TIMERS.handle().block_on(async move { tokio::time::timeout(left, call).await }).map_err(|_| Overran)
}

/// The CPU side of a computing call's deadline. The epoch ticker measures wall-clock time,
/// which a thread that is not running (a machine busy with other work, a paused VM) spends
/// all the same: a sound plugin caught there would be cut off and its message dropped. So once
/// a call's wall-clock deadline has passed it runs on until it has used [`Self::grace`] more of
/// its thread's CPU time, checked every epoch tick. A call that computes all along ends about
/// a quarter of its deadline late. Reading the thread's CPU time costs a system call (~0.8 µs
/// here), so only calls past their deadline read it.
#[derive(Debug, Default)]
pub struct CpuDeadline {
    /// The thread's CPU time when the call's wall-clock deadline passed.
    overdue_at: Option<Duration>,
}

impl CpuDeadline {
    /// CPU time a call may use past its wall-clock deadline.
    pub fn grace(call_timeout: Duration) -> Duration {
        call_timeout / 4
    }

    /// A call starts.
    pub fn reset(&mut self) {
        self.overdue_at = None;
    }

    /// The epoch deadline passed: interrupt the call, or the ticks until the next look.
    pub fn on_epoch_deadline(&mut self, call_timeout: Duration) -> wasmtime::UpdateDeadline {
        // Without the clock, the wall-clock rule alone.
        let Some(now) = thread_cpu_time() else { return wasmtime::UpdateDeadline::Interrupt };
        match self.overdue_at {
            Some(at) if now.saturating_sub(at) >= Self::grace(call_timeout) => wasmtime::UpdateDeadline::Interrupt,
            Some(_) => wasmtime::UpdateDeadline::Continue(1),
            None => {
                self.overdue_at = Some(now);
                wasmtime::UpdateDeadline::Continue(1)
            }
        }
    }
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec for the call to fill in.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_call_is_cut_off_and_a_quick_one_returns() {
        assert_eq!(run(Duration::from_millis(50), async { 7 }), Ok(7));
        let waited = std::time::Instant::now();
        let slept = run(Duration::from_millis(50), async { tokio::time::sleep(Duration::from_secs(30)).await });
        assert_eq!(slept, Err(Overran));
        assert!(waited.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn past_its_deadline_a_call_is_interrupted_for_cpu_used_not_for_time_without_it() {
        use wasmtime::UpdateDeadline::{Continue, Interrupt};
        let timeout = Duration::from_millis(8);
        let mut deadline = CpuDeadline::default();
        assert!(matches!(deadline.on_epoch_deadline(timeout), Continue(1)));
        // Descheduled (here: asleep) past the deadline: no CPU used, no interrupt.
        std::thread::sleep(Duration::from_millis(30));
        assert!(matches!(deadline.on_epoch_deadline(timeout), Continue(1)));
        // Computing through the grace: interrupted.
        let busy = std::time::Instant::now();
        while busy.elapsed() < CpuDeadline::grace(timeout) * 3 {
            std::hint::black_box(busy.elapsed());
        }
        assert!(matches!(deadline.on_epoch_deadline(timeout), Interrupt));
        deadline.reset();
        assert!(matches!(deadline.on_epoch_deadline(timeout), Continue(1)));
    }
}
