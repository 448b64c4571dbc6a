//! A small VI SDK (vim25) SOAP client on reqwest, quick-xml and serde. It knows nothing of `am`.
//!
//! Layers, after govmomi:
//! - [`transport`]: the seam, one trait ([`RoundTripper`]) with one method; [`HttpTransport`] is the
//!   real one (rustls; TLS verified by default, see [`TlsMode`]).
//! - [`xml`] and [`value`]: requests are written with [`xml::XmlWriter`]; responses decode to [`Value`]
//!   trees (schema-less, guided by `xsi:type`), which [`from_value`] maps onto serde types.
//! - [`split`]: large answers (a full inventory) decoded element by element as they arrive, never
//!   held whole.
//! - [`Client`]: service content, session (login, keep-alive, re-login after `NotAuthenticated`),
//!   [`Client::invoke`] for any method, and typed methods for the ones the product needs.
//! - Errors in layers ([`Error`]): transport, HTTP, XML, SOAP fault with the vim fault inside
//!   ([`SoapFault`], [`VimFault`]), and task failure ([`TaskError`]).
//!
//! ```no_run
//! # async fn demo() -> vsphere_soap::Result<()> {
//! use vsphere_soap::{Client, Credentials, Password, PropertySpec};
//! let client = Client::builder("https://vc.example.com/sdk")
//!     .credentials(Credentials::new("ha@vsphere.local", Password::from_env("VC_PASSWORD")?))
//!     .connect()
//!     .await?;
//! let vms = client
//!     .retrieve_inventory(vec![PropertySpec::new("VirtualMachine", &["name", "runtime.powerState"])])
//!     .await?;
//! for vm in &vms {
//!     println!("{} {:?}", vm.obj, vm.get_str("runtime.powerState"));
//! }
//! # Ok(()) }
//! ```

mod client;
mod error;
pub mod event;
mod methods;
pub mod property;
mod reads;
mod secret;
pub mod split;
pub mod task;
mod time;
pub mod tls;
pub mod transport;
pub mod value;
pub mod xml;

pub use client::{AboutInfo, Client, ClientBuilder, Each, ServiceContent, UserSession, decode_response};
pub use error::{Error, FaultKind, Result, SoapFault, TaskError, VimFault};
pub use event::{EntityArg, Event, EventCollector, EventFilter, PostedEvent, PostedEventKind};
pub use methods::{CloneSpec, FileInfo, HostConnectSpec, MovePriority, NasVolumeSpec, RelocateSpec};
pub use property::{
    ObjectContent, ObjectSpec, ObjectUpdate, ObjectUpdateKind, PropertyChange, PropertyChangeOp,
    PropertyFilterSpec, PropertySpec, PropertyWatch, SelectionSpec, TraversalSpec, UpdateSet,
};
pub use secret::{Credentials, Password};
pub use task::{TaskInfo, TaskState};
pub use tls::{Thumbprint, TlsMode};
pub use transport::{
    DEFAULT_MAX_BODY, HttpTransport, RoundTripper, SoapRequest, SoapResponse, TransportError,
    TransportErrorKind,
};
pub use value::{DataObject, DecodeError, MoRef, Value, from_value};

/// Date-time helpers for `xsd:dateTime` values (UTC).
pub mod datetime {
    pub use crate::time::{format, parse};
}
