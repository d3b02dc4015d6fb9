//! The API against real daemons over real HTTP.

mod conflict;
mod limits;
mod refusals;
mod support;
