//! Faults at the worst moment: SIGKILLed tools, full disks, concurrent starts.
