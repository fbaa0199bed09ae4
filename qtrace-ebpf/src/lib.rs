#![no_std]
// Present so that the userspace crate can depend on this one for rebuilds.
