//! The FIFO queue of waiting acquisitions.
//!
//! Entries hold only an id and a waker: each waiter keeps its own cost. Only the head is ever
//! woken to try again, so an admission costs one wake-up, not one per waiter.

use std::collections::VecDeque;
use std::task::Waker;

#[derive(Debug)]
struct Entry {
    id: u64,
    waker: Option<Waker>,
}

/// Waiters in arrival order. Ids increase, so an entry is found by binary search.
#[derive(Debug, Default)]
pub(crate) struct WaitQueue {
    entries: VecDeque<Entry>,
    next_id: u64,
}

impl WaitQueue {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a waiter and returns its id.
    pub(crate) fn push(&mut self, waker: &Waker) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push_back(Entry {
            id,
            waker: Some(waker.clone()),
        });
        id
    }

    pub(crate) fn is_head(&self, id: u64) -> bool {
        self.entries.front().is_some_and(|e| e.id == id)
    }

    fn position(&self, id: u64) -> Option<usize> {
        self.entries.binary_search_by_key(&id, |e| e.id).ok()
    }

    /// Stores the waker to use for `id`.
    pub(crate) fn set_waker(&mut self, id: u64, waker: &Waker) {
        if let Some(i) = self.position(id) {
            let slot = &mut self.entries[i].waker;
            match slot {
                Some(w) if w.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
    }

    /// Removes `id`; if it was the head, wakes the new head. Returns whether it was queued.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        match self.position(id) {
            Some(0) => {
                self.entries.pop_front();
                self.wake_head();
                true
            }
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// Wakes the head waiter, if any, so it tries again.
    pub(crate) fn wake_head(&mut self) {
        if let Some(w) = self.entries.front_mut().and_then(|e| e.waker.take()) {
            w.wake();
        }
    }
}
