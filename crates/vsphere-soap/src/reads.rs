//! Reads of single objects merged: while one `RetrievePropertiesEx` of some properties of one
//! kind of object is in flight, the reads of the same properties of other objects of that kind
//! wait and then go as one call (group commit: nothing waits when nothing is in flight).
//!
//! A failover of 100 VMs reads each VM, its host, its tasks: some 700 single-object calls at
//! once, each a request vCenter serves while it registers and powers on. Merged, they are a few
//! dozen. A read is never answered by a call that started before it was asked: a waiting read
//! joins only the next call, never the one in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::property::{ObjectContent, PropertyFilterSpec};
use crate::value::MoRef;

/// At most this many objects in one merged call.
const MAX_BATCH: usize = 100;

/// The kind of object and the properties read: reads merge only with reads of the same.
type Key = (String, Vec<String>);

/// The reads waiting for the next call, per key; a key present is a call in flight.
#[derive(Default)]
pub(crate) struct Lanes {
    waiting: Mutex<HashMap<Key, Vec<Waiter>>>,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (in_flight, waiting) = match self.waiting.try_lock() {
            Ok(w) => (w.len(), w.values().map(Vec::len).sum::<usize>()),
            Err(_) => (0, 0),
        };
        f.debug_struct("Lanes")
            .field("in_flight", &in_flight)
            .field("waiting", &waiting)
            .finish()
    }
}

#[derive(Debug)]
struct Waiter {
    obj: MoRef,
    tx: oneshot::Sender<Turn>,
}

/// What a waiting read is told.
#[derive(Debug)]
enum Turn {
    /// Its answer, from a merged call.
    Done(Result<ObjectContent>),
    /// Its turn to make the next call, for itself and these others.
    Lead(Lead),
    /// The merged call faulted (an object in it gone?): read alone.
    Alone,
}

/// The right to make the next call of a key. Dropped (done, or its read given up), it passes
/// the right on to the first read still waiting, with the others waiting behind it.
#[derive(Debug)]
struct Lead {
    lanes: Arc<Lanes>,
    key: Option<Key>,
    others: Vec<Waiter>,
}

impl Drop for Lead {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.lanes.pass_on(key);
        }
    }
}

impl Lanes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Waiter>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pass_on(self: &Arc<Self>, key: Key) {
        let mut waiting = self.lock();
        let Some(queue) = waiting.get_mut(&key) else {
            return;
        };
        while !queue.is_empty() {
            let first = queue.remove(0);
            let n = queue.len().min(MAX_BATCH - 1);
            let lead = Lead {
                lanes: Arc::clone(self),
                key: Some(key.clone()),
                others: queue.drain(..n).collect(),
            };
            match first.tx.send(Turn::Lead(lead)) {
                Ok(()) => return,
                // That read was given up: the next one leads.
                Err(Turn::Lead(mut lead)) => {
                    lead.key = None;
                    let others = std::mem::take(&mut lead.others);
                    queue.splice(0..0, others);
                }
                Err(_) => {}
            }
        }
        waiting.remove(&key);
    }
}

impl Client {
    /// Properties `paths` of one object; merged with the same read of other objects of its kind
    /// made while one is in flight (see the module's notes).
    pub async fn retrieve_object(&self, obj: &MoRef, paths: &[&str]) -> Result<ObjectContent> {
        let lanes = self.read_lanes();
        let key: Key = (obj.kind.clone(), paths.iter().map(|p| (*p).to_owned()).collect());
        let waiting = {
            let mut waiting = lanes.lock();
            match waiting.get_mut(&key) {
                Some(queue) => {
                    let (tx, rx) = oneshot::channel();
                    queue.push(Waiter { obj: obj.clone(), tx });
                    Some(rx)
                }
                None => {
                    waiting.insert(key.clone(), Vec::new());
                    None
                }
            }
        };
        let mut lead = match waiting {
            None => Lead {
                lanes: Arc::clone(lanes),
                key: Some(key),
                others: Vec::new(),
            },
            Some(rx) => match rx.await {
                Ok(Turn::Done(r)) => return r,
                Ok(Turn::Lead(lead)) => lead,
                // Read alone: the merged call faulted, or its maker gave it up.
                Ok(Turn::Alone) | Err(_) => return self.retrieve_one(obj, paths).await,
            },
        };
        let others = std::mem::take(&mut lead.others);
        let mine = self.retrieve_merged(obj, others, paths).await;
        drop(lead);
        mine
    }

    /// The read of one object alone.
    async fn retrieve_one(&self, obj: &MoRef, paths: &[&str]) -> Result<ObjectContent> {
        let spec = PropertyFilterSpec::for_object(obj, paths);
        let mut res = self.retrieve_properties(&spec, None).await?;
        Ok(res.pop().unwrap_or_else(|| empty(obj)))
    }

    /// One call for `mine` and the `others`' objects; answers the others, returns mine.
    async fn retrieve_merged(
        &self,
        mine: &MoRef,
        others: Vec<Waiter>,
        paths: &[&str],
    ) -> Result<ObjectContent> {
        if others.is_empty() {
            return self.retrieve_one(mine, paths).await;
        }
        let mut objects = vec![mine.clone()];
        for w in &others {
            if !objects.contains(&w.obj) {
                objects.push(w.obj.clone());
            }
        }
        let spec = PropertyFilterSpec::for_objects(&mine.kind, objects, paths);
        match self.retrieve_properties(&spec, None).await {
            Ok(found) => {
                let mut by: HashMap<MoRef, ObjectContent> =
                    found.into_iter().map(|o| (o.obj.clone(), o)).collect();
                for w in others {
                    let o = by.get(&w.obj).cloned().unwrap_or_else(|| empty(&w.obj));
                    // A read given up meanwhile is not answered.
                    let _ = w.tx.send(Turn::Done(Ok(o)));
                }
                Ok(by.remove(mine).unwrap_or_else(|| empty(mine)))
            }
            // vCenter faults the whole call when one of its objects is gone: each reads alone,
            // to get its own answer.
            Err(Error::Fault { .. }) => {
                for w in others {
                    let _ = w.tx.send(Turn::Alone);
                }
                self.retrieve_one(mine, paths).await
            }
            Err(e) => {
                for w in others {
                    let _ = w.tx.send(Turn::Done(Err(e.for_another())));
                }
                Err(e)
            }
        }
    }
}

fn empty(obj: &MoRef) -> ObjectContent {
    ObjectContent {
        obj: obj.clone(),
        props: Vec::new(),
        missing: Vec::new(),
    }
}
