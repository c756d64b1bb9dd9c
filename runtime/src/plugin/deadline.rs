//! Every plugin call ends at its deadline: one that computes is interrupted by the epoch
//! ticker (a trap), one that waits in a host call (a WASI sleep or poll) is cut off by a timer,
//! which drops the call. Calls run on the caller's own thread; one background thread for the
//! process drives the timers.

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
}
