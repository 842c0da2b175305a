//! The one row-chunk planner: how every Jacobian implementation cuts the rows of $X$
//! into chunks under [`JacobianParams`].
//!
//! An implementation states what one row costs ([`RowCost`]): the bytes it keeps per row
//! between products (saved factors, a tape) and the bytes a product needs per row and
//! column. The plan then decides, the same way for all of them:
//! - the factors of all rows are cached when caching is asked for and they fit in half
//!   of [`JacobianParams::memory_budget`];
//! - a cached operator's products run in chunks whose working memory fits in the other
//!   half; an uncached one recomputes the factors per chunk, factors and working memory
//!   together under the whole budget;
//! - no chunk has more than [`JacobianParams::max_chunk_rows`] rows, nor fewer than one.

use crate::jacobian::JacobianParams;

/// What one row of $X$ costs an implementation, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RowCost {
    /// Kept per row between products (saved factors or a tape).
    pub saved: usize,
    /// Needed per row and per column of a product.
    pub work: usize,
}

/// The chunking of $n$ rows at a [`RowCost`] under [`JacobianParams`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RowPlan {
    n: usize,
    cost: RowCost,
    options: JacobianParams,
}

impl RowPlan {
    /// The plan for `n` rows.
    pub fn new(n: usize, cost: RowCost, options: JacobianParams) -> Self {
        Self { n, cost, options }
    }

    fn clamp(&self, rows: usize) -> usize {
        rows.clamp(1, self.n.max(1))
            .min(self.options.max_chunk_rows.max(1))
    }

    /// Whether the factors of all rows are kept: asked for, and they fit in half the budget.
    pub fn caches(&self) -> bool {
        self.options.cache_factors
            && self.n.saturating_mul(self.cost.saved) <= self.options.memory_budget / 2
    }

    /// Rows per cached chunk: its factors and a one-column product's work in half the budget.
    pub fn cache_rows(&self) -> usize {
        self.clamp(self.options.memory_budget / 2 / (self.cost.saved + self.cost.work).max(1))
    }

    /// Rows per chunk of a product with `k` columns: the work alone in half the budget when
    /// the factors are cached, factors and work in the whole budget when they are not.
    pub fn product_rows(&self, k: usize, cached: bool) -> usize {
        let work = self.cost.work.saturating_mul(k.max(1));
        if cached {
            self.clamp(self.options.memory_budget / 2 / work.max(1))
        } else {
            self.clamp(self.options.memory_budget / self.cost.saved.saturating_add(work).max(1))
        }
    }

    /// Columns a product may carry at once over cached chunks of `rows` rows (at least one):
    /// their work in half the budget.
    pub fn columns_for(&self, rows: usize) -> usize {
        (self.options.memory_budget / 2 / self.cost.work.saturating_mul(rows).max(1)).max(1)
    }

    /// Rows per chunk of a forward pass alone.
    pub fn forward_rows(&self) -> usize {
        self.clamp(self.options.memory_budget / self.cost.saved.max(1))
    }

    /// `(start, len)` of the chunks of `rows` rows.
    pub fn chunks(&self, rows: usize) -> impl Iterator<Item = (usize, usize)> + use<> {
        let n = self.n;
        let rows = rows.max(1);
        (0..n).step_by(rows).map(move |s| (s, rows.min(n - s)))
    }
}

/// Cuts rows `offset..offset + len` out of a chunk's factors.
pub(crate) type Narrow<'a, F> = &'a dyn Fn(&F, usize, usize) -> F;

/// The saved factors `F` of the rows of $X$, chunked by a [`RowPlan`]: computed once and
/// kept when the plan caches, recomputed per chunk and product otherwise.
#[derive(Clone, Debug)]
pub(crate) struct Chunked<F> {
    plan: RowPlan,
    cache: Option<Vec<(usize, F)>>,
}

impl<F> Chunked<F> {
    /// The factors under `plan`, `make(start, len)` computing those of rows
    /// `start..start + len`; cached in chunks of [`RowPlan::cache_rows`] when the plan caches.
    pub fn new(plan: RowPlan, make: impl FnMut(usize, usize) -> F) -> Self {
        let mut make = make;
        let cache = plan.caches().then(|| {
            plan.chunks(plan.cache_rows())
                .map(|(s, len)| (s, make(s, len)))
                .collect()
        });
        Self { plan, cache }
    }

    /// The plan.
    pub fn plan(&self) -> &RowPlan {
        &self.plan
    }

    /// The cached chunks, `(start, factors)`, if any.
    pub fn cached(&self) -> Option<&[(usize, F)]> {
        self.cache.as_deref()
    }

    /// One value per chunk: `from_cache(factors)` of each cached chunk, else `fresh(start,
    /// len)` of chunks sized for a forward pass alone (what the network outputs need).
    pub fn per_chunk<T>(
        &self,
        from_cache: impl Fn(&F) -> T,
        fresh: impl Fn(usize, usize) -> T,
    ) -> Vec<T> {
        match &self.cache {
            Some(chunks) => chunks.iter().map(|(_, f)| from_cache(f)).collect(),
            None => self
                .plan
                .chunks(self.plan.forward_rows())
                .map(|(s, len)| fresh(s, len))
                .collect(),
        }
    }

    /// Calls `f(start, factors)` for chunks sized for a product with `k` columns: the cached
    /// chunks (split by `narrow(factors, offset, len)` where one holds more rows than the
    /// product's working memory allows, if `narrow` is given), else freshly made ones.
    pub fn for_each<E>(
        &self,
        k: usize,
        make: impl Fn(usize, usize) -> F,
        narrow: Option<Narrow<'_, F>>,
        rows_of: impl Fn(&F) -> usize,
        mut f: impl FnMut(usize, &F) -> Result<(), E>,
    ) -> Result<(), E> {
        match &self.cache {
            Some(chunks) => {
                let rows = self.plan.product_rows(k, true);
                for (start, fac) in chunks {
                    let m = rows_of(fac);
                    match narrow {
                        Some(cut) if m > rows => {
                            for s in (0..m).step_by(rows) {
                                f(start + s, &cut(fac, s, rows.min(m - s)))?;
                            }
                        }
                        _ => f(*start, fac)?,
                    }
                }
            }
            None => {
                for (s, len) in self.plan.chunks(self.plan.product_rows(k, false)) {
                    f(s, &make(s, len))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: usize, saved: usize, work: usize, budget: usize, max: usize) -> RowPlan {
        RowPlan::new(
            n,
            RowCost { saved, work },
            JacobianParams {
                memory_budget: budget,
                cache_factors: true,
                max_chunk_rows: max,
                ..Default::default()
            },
        )
    }

    #[test]
    fn caches_when_the_factors_fit_in_half_the_budget() {
        assert!(plan(100, 10, 1, 2000, usize::MAX).caches());
        assert!(!plan(100, 10, 1, 1999, usize::MAX).caches());
        let off = RowPlan::new(
            1,
            RowCost { saved: 1, work: 1 },
            JacobianParams {
                cache_factors: false,
                ..Default::default()
            },
        );
        assert!(!off.caches());
    }

    #[test]
    fn chunks_fit_the_budget_and_the_row_cap() {
        let p = plan(100, 10, 5, 1000, usize::MAX);
        assert_eq!(p.cache_rows(), 500 / 15);
        assert_eq!(p.product_rows(2, true), 500 / 10);
        assert_eq!(p.product_rows(2, false), 1000 / 20);
        assert_eq!(p.forward_rows(), 100);
        let capped = plan(100, 10, 5, 1000, 7);
        assert_eq!(capped.product_rows(1, false), 7);
        // never fewer than one row, however small the budget
        assert_eq!(plan(100, 10, 5, 1, usize::MAX).product_rows(9, false), 1);
        let chunks: Vec<_> = p.chunks(30).collect();
        assert_eq!(chunks, [(0, 30), (30, 30), (60, 30), (90, 10)]);
    }
}
