//! Panics caught per target: a process-wide panic hook that, on a thread working for
//! a target, records the first panic's message and location in that target's slot
//! (and prints nothing); on any other thread it defers to the previous hook.
//!
//! Threads a target starts itself (a tokio runtime's workers and blocking pool)
//! join the target's slot with [`PanicSlot::enter`], so a panic in a spawned task,
//! which tokio catches and turns into a `JoinError` nobody may look at, still
//! counts as a crash of the input that caused it.

use std::cell::RefCell;
use std::panic::PanicHookInfo;
use std::sync::{Arc, Mutex, Once};

/// Where the panics of one target's threads are recorded.
#[derive(Debug, Default)]
pub struct PanicSlot {
    first: Mutex<Option<String>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<PanicSlot>>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn message(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_string());
    match info.location() {
        Some(l) => format!("{text} (at {}:{})", l.file(), l.line()),
        None => text,
    }
}

fn install() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let slot = CURRENT.with(|c| c.borrow().clone());
            match slot {
                Some(slot) => {
                    let mut first = slot.first.lock().unwrap_or_else(|p| p.into_inner());
                    if first.is_none() {
                        *first = Some(message(info));
                    }
                }
                None => previous(info),
            }
        }));
    });
}

impl PanicSlot {
    /// A new slot (installs the hook on first use).
    pub fn new() -> Arc<PanicSlot> {
        install();
        Arc::new(PanicSlot::default())
    }

    /// The slot of the current thread, if it works for a target.
    pub fn current() -> Option<Arc<PanicSlot>> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// Makes the current thread record its panics here.
    pub fn enter(self: &Arc<Self>) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
    }

    /// Takes the first panic recorded since the last call.
    pub fn take(&self) -> Option<String> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Makes every thread of a tokio runtime record its panics in the slot of the thread
/// that builds it: call it on the builder inside a harness.
pub fn on_thread_start() -> impl Fn() + Send + Sync + 'static {
    let slot = PanicSlot::current();
    move || {
        if let Some(s) = &slot {
            s.enter();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_on_entered_threads_are_recorded_not_printed() {
        let slot = PanicSlot::new();
        let s = slot.clone();
        let r = std::thread::spawn(move || {
            s.enter();
            std::panic::catch_unwind(|| panic!("boom {}", 1)).is_err()
        })
        .join();
        assert!(matches!(r, Ok(true)));
        let m = slot.take();
        assert!(
            m.as_deref().is_some_and(|m| m.starts_with("boom 1")),
            "{m:?}"
        );
        assert_eq!(slot.take(), None);
    }
}
