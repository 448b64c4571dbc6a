//! Events: `QueryEvents`, an event history collector for reading new events, and `PostEvent`.

use std::time::SystemTime;

use crate::client::{Client, single_moref};
use crate::error::{Error, Result};
use crate::value::{MoRef, Value};
use crate::xml::XmlWriter;

/// An event, with the fields common to all event types; the rest is in `raw`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event type, e.g. `VmPoweredOffEvent`, `HostConnectionLostEvent`.
    pub type_name: String,
    /// The event key (increasing).
    pub key: i64,
    /// Events of one operation share a chain id (a task's `eventChainId`).
    pub chain_id: i64,
    /// When it happened (xsd:dateTime as sent).
    pub created_time: String,
    /// The user who caused it; empty for system events.
    pub user_name: String,
    /// The VM concerned.
    pub vm: Option<EntityArg>,
    /// The host concerned.
    pub host: Option<EntityArg>,
    /// The cluster or compute resource concerned.
    pub compute_resource: Option<EntityArg>,
    /// The datacenter concerned.
    pub datacenter: Option<EntityArg>,
    /// The message as formatted by the server.
    pub full_formatted_message: String,
    /// The whole event as decoded.
    pub raw: Value,
}

/// An entity named in an event (`VmEventArgument`, `HostEventArgument`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityArg {
    /// The entity's name at the time of the event.
    pub name: String,
    /// The entity, when sent.
    pub entity: Option<MoRef>,
}

impl Event {
    /// The event time, parsed.
    pub fn created(&self) -> Option<SystemTime> {
        crate::time::parse(&self.created_time)
    }

    /// Decode an event value.
    pub fn from_value(v: Value) -> Result<Self> {
        let type_name = v.type_name().unwrap_or("Event").to_string();
        let s = |k: &str| v.field(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let arg = |k: &str, inner: &str| {
            v.field(k).map(|a| EntityArg {
                name: a
                    .field("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                entity: a.field(inner).and_then(Value::as_moref).cloned(),
            })
        };
        let key = v
            .field("key")
            .and_then(Value::as_i64)
            .ok_or_else(|| Error::Decode {
                method: "Event".into(),
                reason: format!("{type_name} without a key"),
            })?;
        Ok(Event {
            key,
            chain_id: v.field("chainId").and_then(Value::as_i64).unwrap_or_default(),
            created_time: s("createdTime"),
            user_name: s("userName"),
            vm: arg("vm", "vm"),
            host: arg("host", "host"),
            compute_resource: arg("computeResource", "computeResource"),
            datacenter: arg("datacenter", "datacenter"),
            full_formatted_message: s("fullFormattedMessage"),
            type_name,
            raw: v,
        })
    }
}

/// Which events to read (`EventFilterSpec`), the fields we use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events about this entity ...
    pub entity: Option<MoRef>,
    /// ... and, when true, its children (`recursion = all`; else `self`).
    pub recursive: bool,
    /// Not before this time.
    pub begin_time: Option<SystemTime>,
    /// Not after this time.
    pub end_time: Option<SystemTime>,
    /// Only events caused by these users.
    pub user_names: Vec<String>,
    /// Only these event types, e.g. `VmPoweredOffEvent`.
    pub types: Vec<String>,
    /// At most this many events (`QueryEvents` default on some servers is 10: set it).
    pub max_count: Option<i32>,
}

impl EventFilter {
    fn write(&self, w: &mut XmlWriter) {
        w.start("filter");
        if let Some(e) = &self.entity {
            w.start("entity")
                .moref("entity", e)
                .text("recursion", if self.recursive { "all" } else { "self" })
                .end("entity");
        }
        if self.begin_time.is_some() || self.end_time.is_some() {
            w.start("time")
                .opt_text("beginTime", self.begin_time.map(crate::time::format).as_deref())
                .opt_text("endTime", self.end_time.map(crate::time::format).as_deref())
                .end("time");
        }
        if !self.user_names.is_empty() {
            w.start("userName").bool("systemUser", false);
            for u in &self.user_names {
                w.text("userList", u);
            }
            w.end("userName");
        }
        for t in &self.types {
            w.text("type", t);
        }
        if let Some(n) = self.max_count {
            w.int("maxCount", i64::from(n));
        }
        w.end("filter");
    }
}

/// Severity of an event we post; with the entity it picks the `GeneralEvent` subtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostedEventKind {
    /// `GeneralUserEvent`: shown as posted by a user.
    User,
    /// `GeneralVmInfoEvent`, `GeneralHostInfoEvent` or `GeneralEvent`.
    Info,
    /// `GeneralVmWarningEvent`, `GeneralHostWarningEvent` or `GeneralEvent`.
    Warning,
    /// `GeneralVmErrorEvent`, `GeneralHostErrorEvent` or `GeneralEvent`.
    Error,
}

impl PostedEvent {
    /// The vim25 event type that will be posted.
    pub fn type_name(&self) -> &'static str {
        let (vm, host) = (self.vm.is_some(), self.host.is_some());
        match (self.kind, vm, host) {
            (PostedEventKind::User, _, _) => "GeneralUserEvent",
            (PostedEventKind::Info, true, _) => "GeneralVmInfoEvent",
            (PostedEventKind::Info, false, true) => "GeneralHostInfoEvent",
            (PostedEventKind::Warning, true, _) => "GeneralVmWarningEvent",
            (PostedEventKind::Warning, false, true) => "GeneralHostWarningEvent",
            (PostedEventKind::Error, true, _) => "GeneralVmErrorEvent",
            (PostedEventKind::Error, false, true) => "GeneralHostErrorEvent",
            (_, false, false) => "GeneralEvent",
        }
    }
}

/// An event to post about a VM or host (e.g. "restarted by the HA manager").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedEvent {
    /// Which `GeneralEvent` type.
    pub kind: PostedEventKind,
    /// The message.
    pub message: String,
    /// The VM concerned: reference and name.
    pub vm: Option<(MoRef, String)>,
    /// The host concerned: reference and name.
    pub host: Option<(MoRef, String)>,
}

impl Client {
    fn event_manager(&self) -> Result<MoRef> {
        self.service_content()
            .event_manager
            .clone()
            .ok_or_else(|| Error::Config("server has no EventManager".into()))
    }

    /// `QueryEvents`: events matching `filter`, newest first as the server sends them.
    pub async fn query_events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        let em = self.event_manager()?;
        let res = self.invoke("QueryEvents", &em, |w| filter.write(w)).await?;
        res.into_iter().map(Event::from_value).collect()
    }

    /// `CreateCollectorForEvents`: a history collector to page through events with
    /// [`EventCollector::read_next`].
    pub async fn event_collector(&self, filter: &EventFilter) -> Result<EventCollector> {
        let em = self.event_manager()?;
        let res = self
            .invoke("CreateCollectorForEvents", &em, |w| filter.write(w))
            .await?;
        Ok(EventCollector {
            client: self.clone(),
            collector: single_moref("CreateCollectorForEvents", res)?,
        })
    }

    /// `PostEvent`: log an event in vCenter's event log.
    pub async fn post_event(&self, event: &PostedEvent) -> Result<()> {
        let em = self.event_manager()?;
        let ty = event.type_name();
        let now = crate::time::format(SystemTime::now());
        self.invoke("PostEvent", &em, |w| {
            // key, chainId, createdTime and userName are required; the server replaces them.
            w.start_typed("eventToPost", ty)
                .int("key", 0)
                .int("chainId", 0)
                .text("createdTime", &now)
                .text("userName", "");
            if let Some((h, name)) = &event.host {
                w.start("host").text("name", name).moref("host", h).end("host");
            }
            if let Some((vm, name)) = &event.vm {
                w.start("vm").text("name", name).moref("vm", vm).end("vm");
            }
            w.text("fullFormattedMessage", &event.message)
                .text("message", &event.message);
            w.end("eventToPost");
        })
        .await
        .map(drop)
    }
}

/// An `EventHistoryCollector`.
#[derive(Debug)]
pub struct EventCollector {
    client: Client,
    collector: MoRef,
}

impl EventCollector {
    /// The collector object (its `latestPage` can be watched with [`Client::watch`]).
    pub fn moref(&self) -> &MoRef {
        &self.collector
    }

    /// `ReadNextEvents`: up to `max` events after the last read (oldest first).
    pub async fn read_next(&self, max: i32) -> Result<Vec<Event>> {
        let res = self.client.invoke("ReadNextEvents", &self.collector, |w| {
            w.int("maxCount", i64::from(max));
        });
        res.await?.into_iter().map(Event::from_value).collect()
    }

    /// `ReadPreviousEvents`: up to `max` events before the last read.
    pub async fn read_previous(&self, max: i32) -> Result<Vec<Event>> {
        let res = self.client.invoke("ReadPreviousEvents", &self.collector, |w| {
            w.int("maxCount", i64::from(max));
        });
        res.await?.into_iter().map(Event::from_value).collect()
    }

    /// `RewindCollector`: move before the oldest event.
    pub async fn rewind(&self) -> Result<()> {
        self.client
            .invoke("RewindCollector", &self.collector, |_| {})
            .await
            .map(drop)
    }

    /// `DestroyCollector`.
    pub async fn destroy(self) -> Result<()> {
        self.client
            .invoke("DestroyCollector", &self.collector, |_| {})
            .await
            .map(drop)
    }
}
