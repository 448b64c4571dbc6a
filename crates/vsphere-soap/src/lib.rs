//! vsphere-soap (skeleton).
