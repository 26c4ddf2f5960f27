//! The trust core: identity, files another user can write, faults at any moment.
