//! Which budgets a request falls under, and what its admission took from each.

/// A budget's id: `0` is the limiter's own. Ids are handed out in order and, after wrapping,
/// only when free; every holder of an id (a permit, a queued waiter) pins its budget, so an
/// id in use never names another budget. 32 bits keep queue entries and permits small.
pub(crate) type BudgetId = u32;

/// The limiter's own budget.
pub(crate) const ROOT: BudgetId = 0;

/// The most budgets one request falls under: the limiter's own, a model's (or its
/// family's), a tenant's.
pub(crate) const MAX_ROUTE: usize = 3;

/// The budgets one request falls under, the limiter's own first; each is charged, all or none.
/// The others follow in order; an unused place holds `ROOT`, which no other budget is (so the
/// route is 12 bytes, and queue entries stay small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    ids: [BudgetId; MAX_ROUTE],
}

impl Route {
    /// Only the limiter's own budget.
    pub(crate) const ROOT: Route = Route {
        ids: [ROOT; MAX_ROUTE],
    };

    #[inline]
    fn len(&self) -> usize {
        1 + self.ids[1..].iter().take_while(|&&id| id != ROOT).count()
    }

    /// Adds `id` after the others (ignored when full, already there, or the limiter's own).
    pub(crate) fn push(&mut self, id: BudgetId) {
        let len = self.len();
        if id != ROOT && len < MAX_ROUTE && !self.ids[..len].contains(&id) {
            self.ids[len] = id;
        }
    }

    #[inline]
    pub(crate) fn ids(&self) -> &[BudgetId] {
        &self.ids[..self.len()]
    }

    /// Whether it holds only the limiter's own budget.
    #[inline]
    pub(crate) fn is_root(&self) -> bool {
        self.ids[1] == ROOT
    }

    /// The budgets other than the limiter's own.
    #[inline]
    pub(crate) fn keyed(&self) -> &[BudgetId] {
        &self.ids[1..self.len()]
    }
}

/// Each limit's bucket mark from one admission (see [`Receipt`](crate::core::Receipt)), for
/// its settlement, over every budget of the route in turn: in place for the first four
/// limits (requests, input, output and a daily cap), on the heap past that.
#[derive(Debug, Clone, Default)]
pub(crate) struct Marks {
    first: [u64; 4],
    rest: Option<Box<[u64]>>,
}

impl Marks {
    /// Room for `len` marks, all zero.
    #[inline]
    pub(crate) fn new(len: usize) -> Self {
        let rest = (len > 4).then(|| vec![0; len - 4].into_boxed_slice());
        Self {
            first: [0; 4],
            rest,
        }
    }

    /// Up to four marks, in place.
    #[inline]
    pub(crate) fn inline(first: [u64; 4]) -> Self {
        Self { first, rest: None }
    }

    #[inline]
    pub(crate) fn set(&mut self, i: usize, mark: u64) {
        match (self.first.get_mut(i), &mut self.rest) {
            (Some(slot), _) => *slot = mark,
            (None, Some(rest)) => {
                if let Some(slot) = rest.get_mut(i - 4) {
                    *slot = mark;
                }
            }
            (None, None) => {}
        }
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> u64 {
        match self.first.get(i) {
            Some(&mark) => mark,
            None => self
                .rest
                .as_ref()
                .and_then(|r| r.get(i - 4))
                .copied()
                .unwrap_or(0),
        }
    }
}

/// What an admission took: which of its budgets gave it an in-flight slot (bit `i` for the
/// route's `i`th budget), each limit's bucket mark, the epoch of the limiter's own policy then,
/// and for a request on a key, the rest of its route. Kept small for the limiter's own path.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    pub(crate) slots: u8,
    pub(crate) epoch: u32,
    pub(crate) marks: Marks,
    pub(crate) keyed: Option<Box<KeyedAdmission>>,
}

/// The route of an admission on a key, and for each of its budgets the number of its limits
/// and its policy's epoch then.
#[derive(Debug, Clone)]
pub(crate) struct KeyedAdmission {
    pub(crate) route: Route,
    pub(crate) lens: [u8; MAX_ROUTE],
    pub(crate) epochs: [u32; MAX_ROUTE],
}

impl Admission {
    /// Nothing: what a settled or moved permit keeps, so that dropping it gives back nothing.
    pub(crate) const EMPTY: Admission = Admission {
        slots: 0,
        epoch: 0,
        marks: Marks {
            first: [0; 4],
            rest: None,
        },
        keyed: None,
    };

    /// The budgets it was charged to.
    #[inline]
    pub(crate) fn route(&self) -> Route {
        self.keyed.as_ref().map_or(Route::ROOT, |k| k.route)
    }

    /// The number of limits and the epoch of the route's `i`th budget at admission.
    #[inline]
    pub(crate) fn budget_at(&self, i: usize, root_len: usize) -> (usize, u32) {
        match &self.keyed {
            Some(k) => (usize::from(k.lens[i]), k.epochs[i]),
            None => (root_len, self.epoch),
        }
    }
}
