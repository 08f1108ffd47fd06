//! HTTP: routes, limits, JSON errors.
