//! Identifiers. They are strings so that vCenter managed object ids (`vm-42`, `host-7`) and the
//! simulator's names (`h1`, `vm-001`) fit alike.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// Makes an id from anything string-like.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

id_type!(
    /// A hypervisor host (ESXi host, simulated host).
    HostId
);
id_type!(
    /// A virtual machine.
    VmId
);
id_type!(
    /// A datastore (shared storage).
    DatastoreId
);
id_type!(
    /// A snapshot of one VM.
    SnapshotId
);
