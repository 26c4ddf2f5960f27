//! Files and processes another user controls must never be turned against pm.
