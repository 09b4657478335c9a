//! The `vigie` CLI's logic that is worth testing without a terminal: the Nagios-mode check.

pub mod check;
