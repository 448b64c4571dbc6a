//! [`InventorySource`] for vCenter: container views of the scope, an event history collector, the
//! custom fields manager and one property collector filter over them all; `WaitForUpdatesEx`
//! feeds the [`Mirror`].

use std::time::{Duration, SystemTime};

use am_core::{Changes, ClusterEvent, HvError, Inventory, InventorySource};
use async_trait::async_trait;
use vsphere_soap::{
    Event, EventCollector, EventFilter, MoRef, ObjectSpec, ObjectUpdate, ObjectUpdateKind, PropertyChange,
    PropertyChangeOp, PropertyFilterSpec, PropertySpec, PropertyWatch,
};

use crate::fault::{Subject, hv_error};
use crate::map::{self, DS_PROPS, EVENT_TYPES, HOST_PROPS, NAMED_PROPS, VM_PROPS};
use crate::mirror::{Cx, Loading, Mirror};
use crate::{Inner, VsphereBackend};

/// Events kept in the collector's page (vCenter may keep its default of 10; a page that holds no
/// event seen before is completed with `QueryEvents`).
const PAGE: i32 = 200;
/// Object updates asked per `WaitForUpdatesEx` answer (vCenter pages a full state by it).
const PAGE_OBJECTS: u32 = 1000;

/// A page of at least this many events, all new, may have lost some.
const SMALL_PAGE: usize = 10;

/// The live feed: the objects of one session.
struct Feed {
    watch: PropertyWatch,
    views: Vec<MoRef>,
    collector: Option<EventCollector>,
    /// The client's session generation it was made in.
    generation: u64,
}

/// Which events were delivered.
#[derive(Debug, Default)]
struct Cursor {
    /// The highest event key delivered (0: none yet).
    last_key: i64,
    /// When the newest delivered event happened.
    last_time: Option<SystemTime>,
}

impl Cursor {
    /// The events of `page` not delivered yet, oldest first, and whether some may be missing
    /// between them and the last delivered one.
    fn take(&mut self, page: &[Event]) -> (Vec<Event>, bool) {
        let mut new: Vec<Event> = page.iter().filter(|e| e.key > self.last_key).cloned().collect();
        new.sort_by_key(|e| e.key);
        let gap = self.last_key > 0 && !new.is_empty() && new.len() == page.len() && page.len() >= SMALL_PAGE;
        self.note(&new);
        (new, gap)
    }

    fn note(&mut self, delivered: &[Event]) {
        for e in delivered {
            if e.key > self.last_key {
                self.last_key = e.key;
                self.last_time = e.created().or(self.last_time);
            }
        }
    }

    /// A first page of a new collector: history at the first start, and when vCenter restarted
    /// (its keys start again); otherwise what happened since the last delivered event.
    fn first_page(&mut self, page: &[Event]) -> Vec<Event> {
        let Some(max) = page.iter().map(|e| e.key).max() else {
            return Vec::new();
        };
        if self.last_key == 0 || max < self.last_key {
            if self.last_key != 0 {
                tracing::warn!(
                    last = self.last_key,
                    now = max,
                    "vCenter's event keys went back (restarted?): events of the outage may be missed"
                );
            }
            self.last_key = max;
            self.last_time = page.iter().filter_map(Event::created).max();
            return Vec::new();
        }
        self.take(page).0
    }
}

/// The inventory half's state.
#[derive(Default)]
pub(crate) struct State {
    feed: Option<Feed>,
    mirror: Mirror,
    cursor: Cursor,
    /// Events found by `snapshot`, delivered by the next `changes`.
    pending: Vec<ClusterEvent>,
    /// Bumped per feed.
    feed_no: u64,
    seq: u64,
}

impl State {
    fn version(&self) -> String {
        format!("{}.{}", self.feed_no, self.seq)
    }
}

/// What a new feed saw first.
struct FirstLook {
    feed: Feed,
    loading: Loading,
    events: Vec<Event>,
}

fn source_err(e: &vsphere_soap::Error) -> HvError {
    hv_error(e, &Subject::new("inventory", "inventory", "vCenter"))
}

/// Splits an update set into inventory objects and the events of the collector's page.
fn split(objects: Vec<ObjectUpdate>, inventory: &mut Vec<ObjectUpdate>, events: &mut Vec<Event>) {
    for o in objects {
        if !event_page(&o, events) {
            inventory.push(o);
        }
    }
}

/// The events of `o` if it is the event collector's page (then `true`).
fn event_page(o: &ObjectUpdate, events: &mut Vec<Event>) -> bool {
    if o.obj.kind != "EventHistoryCollector" {
        return false;
    }
    for c in o.changes.iter().filter(|c| c.name == "latestPage") {
        let Some(page) = &c.val else { continue };
        for v in page.items() {
            match Event::from_value(v.clone()) {
                Ok(e) => events.push(e),
                Err(e) => tracing::debug!(error = %e, "undecodable event skipped"),
            }
        }
    }
    true
}

/// `obj` no longer exists.
fn gone(obj: MoRef) -> ObjectUpdate {
    ObjectUpdate {
        kind: ObjectUpdateKind::Leave,
        obj,
        changes: Vec::new(),
        missing: Vec::new(),
    }
}

impl Inner {
    fn cx(&self) -> Cx<'_> {
        Cx {
            opts: &self.opts,
            time: &self.time,
            shared: &self.shared,
        }
    }

    fn filter(&self, collector: Option<&MoRef>, views: &[MoRef]) -> PropertyFilterSpec {
        let mut prop_set = Vec::new();
        if collector.is_some() {
            // First: vcsim (govmomi 0.24) panics matching a change of a session object (the
            // collector) against a property spec of another type listed before its own.
            prop_set.push(PropertySpec::new("EventHistoryCollector", &["latestPage"]));
        }
        prop_set.extend([
            PropertySpec::new("HostSystem", HOST_PROPS),
            PropertySpec::new("VirtualMachine", VM_PROPS),
            PropertySpec::new("Datastore", DS_PROPS),
            PropertySpec::new("Folder", NAMED_PROPS),
            PropertySpec::new("ResourcePool", NAMED_PROPS),
        ]);
        let cfm = self.client.service_content().custom_fields_manager.clone();
        if cfm.is_some() {
            prop_set.push(PropertySpec::new("CustomFieldsManager", &["field"]));
        }
        let Some((first, rest)) = views.split_first() else {
            return PropertyFilterSpec {
                prop_set,
                object_set: Vec::new(),
            };
        };
        let mut spec = PropertyFilterSpec::for_container_view(first, prop_set);
        for v in rest {
            let more = PropertyFilterSpec::for_container_view(v, Vec::new());
            spec.object_set.extend(more.object_set);
        }
        for obj in collector.into_iter().cloned().chain(cfm) {
            spec.object_set.push(ObjectSpec {
                obj,
                skip: false,
                select_set: Vec::new(),
            });
        }
        spec
    }

    fn event_filter(&self, max: i32) -> EventFilter {
        EventFilter {
            entity: Some(self.scope.events.clone()),
            recursive: true,
            types: EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            max_count: Some(max),
            ..EventFilter::default()
        }
    }

    /// Makes the views, an event collector and a filter over them, and reads the full state.
    async fn open_feed(&self) -> Result<FirstLook, vsphere_soap::Error> {
        let mut views = Vec::new();
        for (container, types) in self.scope.views() {
            match self.client.create_container_view(&container, &types, true).await {
                Ok(v) => views.push(v),
                Err(e) => {
                    for v in &views {
                        let _ = self.client.destroy_view(v).await;
                    }
                    return Err(e);
                }
            }
        }
        // After the first call: it may have logged in again.
        let generation = self.client.session_generation();
        let collector = match self.client.event_collector(&self.event_filter(PAGE)).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no event history collector: user power-offs cannot be told from crashes");
                None
            }
        };
        let spec = self.filter(collector.as_ref().map(EventCollector::moref), &views);
        let mut watch = self
            .client
            .watch(spec)
            .await?
            .page_size(PAGE_OBJECTS)
            .patience(self.opts.update_wait_timeout);
        let mut loading = Loading::default();
        let mut events = Vec::new();
        // The first wait returns the whole state (`truncated`: there is more), each object
        // stored as it arrives: at 10,000 VMs the answer is some 60 MB of XML, never held whole.
        let mut each = |u: ObjectUpdate| {
            if !event_page(&u, &mut events) {
                loading.add(u);
            }
            Ok(())
        };
        for _ in 0..10_000 {
            match watch.next_each(Duration::from_secs(1), &mut each).await? {
                Some(set) if set.truncated => {}
                _ => break,
            }
        }
        Ok(FirstLook {
            feed: Feed {
                watch,
                views,
                collector,
                generation,
            },
            loading,
            events,
        })
    }

    /// Destroys what a feed made, if its session is still the client's.
    async fn close_feed(&self, feed: Feed) {
        if feed.generation != self.client.session_generation() {
            return; // gone with its session
        }
        let tidy = async {
            let _ = feed.watch.close().await;
            for v in &feed.views {
                let _ = self.client.destroy_view(v).await;
            }
            if let Some(c) = feed.collector {
                let _ = c.destroy().await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), tidy).await.is_err() {
            tracing::debug!("destroying the old feed timed out; its session will take it");
        }
    }

    fn map_events(&self, events: &[Event]) -> Vec<ClusterEvent> {
        let shared = self.shared();
        let id = |r: &MoRef| shared.peek_id(&r.value);
        events
            .iter()
            .filter_map(|e| map::event(e, &id, &self.time))
            .collect()
    }

    /// Events of `page` not delivered yet; completes a page that may have lost some.
    async fn new_events(&self, cursor: &mut Cursor, page: &[Event]) -> Vec<ClusterEvent> {
        let since = cursor.last_time;
        let last = cursor.last_key;
        let (mut new, gap) = cursor.take(page);
        if gap {
            let filter = EventFilter {
                begin_time: since.map(|t| t - Duration::from_secs(1)),
                ..self.event_filter(1000)
            };
            match self.client.query_events(&filter).await {
                Ok(more) => {
                    let mut missed: Vec<Event> = more
                        .into_iter()
                        .filter(|e| e.key > last && !new.iter().any(|n| n.key == e.key))
                        .collect();
                    tracing::debug!(missed = missed.len(), "event page completed with QueryEvents");
                    cursor.note(&missed);
                    missed.append(&mut new);
                    missed.sort_by_key(|e| e.key);
                    new = missed;
                }
                Err(e) => tracing::warn!(error = %e, "events may have been missed (QueryEvents failed)"),
            }
        }
        self.map_events(&new)
    }

    /// Re-reads objects vCenter changed without telling (in vcsim: maintenance mode, hosts added
    /// or removed).
    async fn refreshed(&self, objs: Vec<MoRef>) -> Vec<ObjectUpdate> {
        let mut out = Vec::new();
        for obj in objs {
            let paths: &[&str] = match obj.kind.as_str() {
                "HostSystem" => HOST_PROPS,
                "VirtualMachine" => VM_PROPS,
                "Datastore" => DS_PROPS,
                "Folder" | "ResourcePool" => NAMED_PROPS,
                _ => continue,
            };
            match self.client.retrieve_object(&obj, paths).await {
                Ok(content) if !content.props.is_empty() => {
                    let changes = paths
                        .iter()
                        .map(|p| PropertyChange {
                            name: (*p).to_owned(),
                            op: PropertyChangeOp::Assign,
                            val: content.get(p).cloned(),
                        })
                        .collect();
                    out.push(ObjectUpdate {
                        kind: ObjectUpdateKind::Modify,
                        obj,
                        changes,
                        missing: Vec::new(),
                    });
                }
                Ok(_) => out.push(gone(obj)),
                Err(e) if e.is_fault("ManagedObjectNotFound") => out.push(gone(obj)),
                Err(e) => tracing::debug!(obj = %obj, error = %e, "refresh failed"),
            }
        }
        out
    }

    async fn snapshot(&self) -> Result<(Inventory, String), HvError> {
        let mut st = self.source.lock().await;
        if let Some(old) = st.feed.take() {
            self.close_feed(old).await;
        }
        st.mirror.thin(&self.cx());
        let first = self.open_feed().await.map_err(|e| source_err(&e))?;
        let st = &mut *st;
        let fresh = st.cursor.first_page(&first.events);
        st.pending = self.map_events(&fresh);
        st.mirror = Mirror::loaded(first.loading, &self.cx(), Some(&st.mirror));
        st.feed = Some(first.feed);
        st.feed_no += 1;
        st.seq = 0;
        let inv = st.mirror.inventory(&self.cx());
        tracing::info!(
            hosts = inv.hosts.len(),
            vms = inv.vms.len(),
            datastores = inv.datastores.len(),
            "inventory read from vCenter"
        );
        Ok((inv, st.version()))
    }

    /// A new feed after a new session: what changed meanwhile, as deltas and events.
    async fn resync(&self, st: &mut State) -> Result<Changes, HvError> {
        tracing::info!("reading the inventory from vCenter again");
        if let Some(old) = st.feed.take() {
            self.close_feed(old).await;
        }
        // With no feed the mirror takes no updates: only what the diff and the orphans need.
        st.mirror.thin(&self.cx());
        let first = self.open_feed().await.map_err(|e| source_err(&e))?;
        let fresh = st.cursor.first_page(&first.events);
        let mut events = std::mem::take(&mut st.pending);
        events.extend(self.map_events(&fresh));
        let new = Mirror::loaded(first.loading, &self.cx(), Some(&st.mirror));
        let deltas = st.mirror.diff(&new, &self.cx());
        st.mirror = new;
        st.feed = Some(first.feed);
        st.feed_no += 1;
        st.seq = 0;
        Ok(Changes {
            version: st.version(),
            deltas,
            events,
        })
    }

    async fn changes(&self, max_wait: Duration) -> Result<Changes, HvError> {
        let mut guard = self.source.lock().await;
        let st = &mut *guard;
        let Some(generation) = st.feed.as_ref().map(|f| f.generation) else {
            return Err(HvError::Unreachable {
                target: "vCenter".into(),
                detail: "no inventory feed (read the inventory first)".into(),
            });
        };
        if generation != self.client.session_generation() {
            return self.resync(st).await;
        }
        let mut events = std::mem::take(&mut st.pending);
        let refresh = self.shared().take_refresh();
        let mut deltas = if refresh.is_empty() {
            Vec::new()
        } else {
            let updates = self.refreshed(refresh).await;
            st.mirror.apply(updates, &self.cx())
        };
        // Whole seconds (at least one) so that vCenter blocks rather than spins; none when there
        // is news already.
        let wait = if deltas.is_empty() && events.is_empty() {
            max_wait.max(Duration::from_secs(1))
        } else {
            Duration::ZERO
        };
        let mut objects = Vec::new();
        let mut page = Vec::new();
        if !wait.is_zero() {
            let Some(feed) = st.feed.as_mut() else {
                return Err(HvError::Unreachable {
                    target: "vCenter".into(),
                    detail: "no inventory feed".into(),
                });
            };
            let asked = std::time::Instant::now();
            let mut next = feed.watch.next(wait).await;
            let late = asked.elapsed().saturating_sub(wait);
            if late > Duration::from_secs(5) {
                tracing::debug!(
                    late_ms = late.as_millis(),
                    "vCenter answered the wait for updates late"
                );
            }
            loop {
                match next {
                    Ok(Some(set)) if set.resync => return self.resync(st).await,
                    Ok(Some(set)) => {
                        let more = set.truncated;
                        split(set.objects, &mut objects, &mut page);
                        if !more {
                            break;
                        }
                        next = feed.watch.next(Duration::from_secs(1)).await;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // A new session, or a broken wait (a dropped connection; vcsim drops it
                        // when it trips over an object deleted meanwhile): read everything again
                        // and report the difference.
                        tracing::warn!(error = %e, "waiting for vCenter updates failed; reading the inventory again");
                        return match self.resync(st).await {
                            Ok(c) => Ok(c),
                            Err(again) => {
                                st.feed = None;
                                Err(again)
                            }
                        };
                    }
                }
            }
        }
        deltas.extend(st.mirror.apply(objects, &self.cx()));
        if !page.is_empty() {
            let mut cursor = std::mem::take(&mut st.cursor);
            events.extend(self.new_events(&mut cursor, &page).await);
            st.cursor = cursor;
        }
        if !deltas.is_empty() || !events.is_empty() {
            st.seq += 1;
        }
        Ok(Changes {
            version: st.version(),
            deltas,
            events,
        })
    }
}

#[async_trait]
impl InventorySource for VsphereBackend {
    async fn snapshot(&self) -> Result<(Inventory, String), HvError> {
        self.inner.snapshot().await
    }

    /// `since` is the version this source handed out last (it serves one reader).
    async fn changes(&self, _since: &str, max_wait: Duration) -> Result<Changes, HvError> {
        self.inner.changes(max_wait).await
    }

    async fn health(&self, timeout: Duration) -> Result<(), HvError> {
        match tokio::time::timeout(timeout, self.inner.client.current_time()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(source_err(&e)),
            Err(_) => Err(HvError::Timeout {
                op: format!("vCenter's clock (CurrentTime) within {}ms", timeout.as_millis()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsphere_soap::{DataObject, Value};

    fn ev(key: i64, secs: u64) -> Event {
        let t = vsphere_soap::datetime::format(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        Event::from_value(Value::Data(DataObject {
            type_name: Some("VmPoweredOffEvent".into()),
            fields: vec![
                ("key".into(), Value::Int(key)),
                ("chainId".into(), Value::Int(key)),
                ("createdTime".into(), Value::Text(t)),
                ("userName".into(), Value::Text("alice".into())),
            ],
        }))
        .unwrap()
    }

    #[test]
    fn the_cursor_delivers_each_event_once_in_order() {
        let mut c = Cursor::default();
        // The first page of the first collector is history.
        assert!(c.first_page(&[ev(5, 50), ev(3, 30)]).is_empty());
        assert_eq!(c.last_key, 5);
        let (new, gap) = c.take(&[ev(7, 70), ev(6, 60), ev(5, 50)]);
        assert_eq!(new.iter().map(|e| e.key).collect::<Vec<_>>(), vec![6, 7]);
        assert!(!gap);
        let (new, _) = c.take(&[ev(7, 70), ev(6, 60)]);
        assert!(new.is_empty());
        // A full page of new events only: some may be missing.
        let page: Vec<Event> = (20..30).map(|k| ev(k, 100 + k as u64)).collect();
        let (new, gap) = c.take(&page);
        assert_eq!(new.len(), 10);
        assert!(gap);
        assert_eq!(c.last_key, 29);
        // A new collector of the same vCenter: what happened since.
        assert_eq!(
            c.first_page(&[ev(31, 200), ev(29, 129)])
                .iter()
                .map(|e| e.key)
                .collect::<Vec<_>>(),
            vec![31]
        );
        // A restarted vCenter counts from 1 again: its page is history.
        assert!(c.first_page(&[ev(2, 300), ev(1, 290)]).is_empty());
        assert_eq!(c.last_key, 2);
        let (new, _) = c.take(&[ev(3, 310), ev(2, 300)]);
        assert_eq!(new.len(), 1);
    }
}
