//! Typed indices into the engine's tables, the vectors they index, and the name interner.
//!
//! Every host, VM, failure domain, host group, (anti-)affinity group and rule set gets a slot
//! once, the first time it is seen, and keeps it: a slot is never reused. Each kind has its own
//! index type, so a VM slot cannot index the hosts. An index stores its slot plus one in a
//! [`NonZeroU32`], so `Option<HostIx>` is as small as a `u32` (no sentinel value) and the records
//! that hold optional indices keep the layout they had with a `u32::MAX` sentinel.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::ops;

/// A slot of one of the engine's tables.
pub(crate) trait Idx: Copy + Ord {
    /// The index of slot `i`. Slots past `u32::MAX - 1` (never reached: no cluster has four
    /// billion hosts) all map to the last one.
    fn from_u32(i: u32) -> Self;
    /// The index stored as `raw` (the slot plus one).
    fn from_raw(raw: NonZeroU32) -> Self;
    /// [`Idx::from_u32`] for a `usize` slot.
    #[inline]
    fn from_usize(i: usize) -> Self {
        Self::from_u32(u32::try_from(i).unwrap_or(u32::MAX))
    }
    /// The slot.
    fn index(self) -> usize;
}

macro_rules! index_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub(crate) struct $name(NonZeroU32);

        impl Idx for $name {
            #[inline]
            fn from_u32(i: u32) -> Self {
                Self(NonZeroU32::MIN.saturating_add(i))
            }
            #[inline]
            fn from_raw(raw: NonZeroU32) -> Self {
                Self(raw)
            }
            #[inline]
            fn index(self) -> usize {
                (self.0.get() - 1) as usize
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.index())
            }
        }
    };
}

index_type!(
    /// A host slot.
    HostIx
);
index_type!(
    /// A VM slot.
    VmIx
);
index_type!(
    /// A failure domain.
    DomainIx
);
index_type!(
    /// A host group of the constraints.
    GroupIx
);
index_type!(
    /// An anti-affinity group.
    AntiIx
);
index_type!(
    /// An affinity group.
    AffIx
);
index_type!(
    /// The host rules of one VM.
    RuleIx
);

// The niche keeps the optional indices of the hot records as small as bare slots.
const _: () = assert!(size_of::<Option<HostIx>>() == size_of::<u32>());

/// The indices of a table, in order. Counts in the stored form, so that making each index costs
/// no more than an increment.
pub(crate) struct Indices<I> {
    next: NonZeroU32,
    left: usize,
    _ix: PhantomData<fn() -> I>,
}

impl<I: Idx> Iterator for Indices<I> {
    type Item = I;

    #[inline]
    fn next(&mut self) -> Option<I> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let i = I::from_raw(self.next);
        self.next = self.next.saturating_add(1);
        Some(i)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// The elements of an [`IxVec`] with their indices, in order.
pub(crate) struct Enumerated<'a, I, T> {
    it: std::slice::Iter<'a, T>,
    next: NonZeroU32,
    _ix: PhantomData<fn() -> I>,
}

impl<'a, I: Idx, T> Iterator for Enumerated<'a, I, T> {
    type Item = (I, &'a T);

    #[inline]
    fn next(&mut self) -> Option<(I, &'a T)> {
        let x = self.it.next()?;
        let i = I::from_raw(self.next);
        self.next = self.next.saturating_add(1);
        Some((i, x))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.it.size_hint()
    }
}

/// A vector indexed by `I` only.
pub(crate) struct IxVec<I, T> {
    raw: Vec<T>,
    _ix: PhantomData<fn(I) -> I>,
}

impl<I, T: Clone> Clone for IxVec<I, T> {
    fn clone(&self) -> Self {
        IxVec {
            raw: self.raw.clone(),
            _ix: PhantomData,
        }
    }
}

impl<I, T: fmt::Debug> fmt::Debug for IxVec<I, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.raw.fmt(f)
    }
}

impl<I, T> Default for IxVec<I, T> {
    fn default() -> Self {
        IxVec {
            raw: Vec::new(),
            _ix: PhantomData,
        }
    }
}

impl<I: Idx, T> IxVec<I, T> {
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Room for `more` entries (a build knows how many: doubling would leave up to half unused).
    pub fn reserve(&mut self, more: usize) {
        self.raw.reserve_exact(more);
    }

    /// Appends `x` and returns its index.
    pub fn push(&mut self, x: T) -> I {
        let i = I::from_usize(self.raw.len());
        self.raw.push(x);
        i
    }

    pub fn get(&self, i: I) -> Option<&T> {
        self.raw.get(i.index())
    }

    pub fn get_mut(&mut self, i: I) -> Option<&mut T> {
        self.raw.get_mut(i.index())
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.raw.iter()
    }

    /// Every index, in order.
    pub fn indices(&self) -> Indices<I> {
        Indices {
            next: NonZeroU32::MIN,
            left: self.raw.len(),
            _ix: PhantomData,
        }
    }

    /// Every element with its index, in order.
    pub fn iter_enumerated(&self) -> Enumerated<'_, I, T> {
        Enumerated {
            it: self.raw.iter(),
            next: NonZeroU32::MIN,
            _ix: PhantomData,
        }
    }
}

impl<I: Idx, T: Clone> IxVec<I, T> {
    /// Grows (or shrinks) to `n` elements, new ones `x`.
    pub fn resize(&mut self, n: usize, x: T) {
        self.raw.resize(n, x);
    }

    /// Makes `i` an index, new elements `x`.
    pub fn ensure(&mut self, i: I, x: T) -> &mut T {
        if self.raw.len() <= i.index() {
            self.raw.resize(i.index() + 1, x);
        }
        &mut self.raw[i.index()]
    }
}

impl<I: Idx, T> ops::Index<I> for IxVec<I, T> {
    type Output = T;
    #[inline]
    fn index(&self, i: I) -> &T {
        &self.raw[i.index()]
    }
}

impl<I: Idx, T> ops::IndexMut<I> for IxVec<I, T> {
    #[inline]
    fn index_mut(&mut self, i: I) -> &mut T {
        &mut self.raw[i.index()]
    }
}

/// Names (of domains, groups) to dense indices, and back.
pub(crate) struct Interner<I> {
    map: HashMap<String, I>,
    names: IxVec<I, String>,
}

impl<I: Clone> Clone for Interner<I> {
    fn clone(&self) -> Self {
        Interner {
            map: self.map.clone(),
            names: self.names.clone(),
        }
    }
}

impl<I: fmt::Debug> fmt::Debug for Interner<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interner")
            .field("map", &self.map)
            .field("names", &self.names)
            .finish()
    }
}

impl<I> Default for Interner<I> {
    fn default() -> Self {
        Interner {
            map: HashMap::new(),
            names: IxVec::default(),
        }
    }
}

impl<I: Idx> Interner<I> {
    /// The index of `s`, a new one if `s` is new.
    pub fn get_or_add(&mut self, s: &str) -> I {
        if let Some(&i) = self.map.get(s) {
            return i;
        }
        let i = self.names.push(s.to_owned());
        self.map.insert(s.to_owned(), i);
        i
    }

    /// The index of `s`, if it has one.
    pub fn get(&self, s: &str) -> Option<I> {
        self.map.get(s).copied()
    }

    /// The name of `i` (empty if it has none).
    pub fn name(&self, i: I) -> &str {
        self.names.get(i).map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_round_trip_and_keep_order() {
        for i in [0usize, 1, 7, 1 << 20, u32::MAX as usize - 1] {
            assert_eq!(HostIx::from_usize(i).index(), i);
        }
        assert_eq!(
            HostIx::from_usize(u32::MAX as usize).index(),
            u32::MAX as usize - 1
        );
        assert!(HostIx::from_usize(3) < HostIx::from_usize(4));
        assert_eq!(size_of::<Option<VmIx>>(), 4);
    }

    #[test]
    fn interner_gives_dense_indices() {
        let mut n: Interner<DomainIx> = Interner::default();
        let a = n.get_or_add("a");
        let b = n.get_or_add("b");
        assert_eq!((a.index(), b.index()), (0, 1));
        assert_eq!(n.get_or_add("a"), a);
        assert_eq!(n.name(b), "b");
        assert_eq!(n.get("c"), None);
    }
}
