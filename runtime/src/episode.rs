//! A condition that starts, lasts and ends (a disk that will not take writes, a backlog being
//! taken), tracked so that it is logged once when it starts, reminded now and then, and
//! reported once when it is over, instead of a line per occurrence.

use std::time::{Duration, Instant};

/// One kind of episode. Callers say when the condition occurs and ask whether it is over;
/// each answer says what is worth a log line.
#[derive(Debug)]
pub struct Episode {
    /// While it lasts, a reminder this often.
    remind_every: Duration,
    /// Over after this long without an occurrence.
    quiet_for: Duration,
    current: Option<Current>,
}

#[derive(Debug)]
struct Current {
    since: Instant,
    /// Occurrences (or units of work, see [`Episode::occurred_n`]) so far.
    count: u64,
    /// Occurrences since the last line.
    since_line: u64,
    last: Instant,
    last_line: Instant,
}

/// What an occurrence or a check calls for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum News {
    /// The episode just started.
    Started,
    /// It goes on: `count` occurrences in all, `recent` of them since the last line; it has
    /// `lasted` so far, and the last line was `window` ago.
    Ongoing { count: u64, recent: u64, lasted: Duration, window: Duration },
    /// It is over.
    Ended { count: u64, lasted: Duration },
}

impl Episode {
    pub fn new(remind_every: Duration, quiet_for: Duration) -> Self {
        Episode { remind_every, quiet_for, current: None }
    }

    pub fn active(&self) -> bool {
        self.current.is_some()
    }

    /// The condition occurred once.
    pub fn occurred(&mut self) -> Option<News> {
        self.occurred_n(1)
    }

    /// The condition occurred, weighing `n` (positions taken, writes failed).
    pub fn occurred_n(&mut self, n: u64) -> Option<News> {
        let now = Instant::now();
        let Some(current) = &mut self.current else {
            self.current = Some(Current { since: now, count: n, since_line: 0, last: now, last_line: now });
            return Some(News::Started);
        };
        current.count += n;
        current.since_line += n;
        current.last = now;
        let window = now - current.last_line;
        if window < self.remind_every {
            return None;
        }
        let recent = std::mem::take(&mut current.since_line);
        current.last_line = now;
        Some(News::Ongoing { count: current.count, recent, lasted: now - current.since, window })
    }

    /// Ends the episode if the condition has not occurred for a while.
    pub fn check_over(&mut self) -> Option<News> {
        let current = self.current.take_if(|c| c.last.elapsed() >= self.quiet_for)?;
        Some(News::Ended { count: current.count, lasted: current.last - current.since })
    }

    /// Ends the episode now: the caller saw the condition clear (a post went through).
    pub fn end(&mut self) -> Option<News> {
        let current = self.current.take()?;
        Some(News::Ended { count: current.count, lasted: current.since.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_to_start_reminders_and_one_to_end() {
        let mut e = Episode::new(Duration::from_millis(20), Duration::from_millis(30));
        assert_eq!(e.occurred(), Some(News::Started));
        assert_eq!(e.occurred(), None, "no line per occurrence");
        std::thread::sleep(Duration::from_millis(25));
        assert!(matches!(e.occurred_n(5), Some(News::Ongoing { count: 7, recent: 6, .. })));
        assert_eq!(e.check_over(), None, "not quiet long enough");
        std::thread::sleep(Duration::from_millis(35));
        assert!(matches!(e.check_over(), Some(News::Ended { count: 7, .. })));
        assert!(!e.active());
        assert_eq!(e.occurred(), Some(News::Started), "a new episode");
        assert!(matches!(e.end(), Some(News::Ended { count: 1, .. })), "ended by the caller");
        assert_eq!(e.end(), None, "once");
    }
}
