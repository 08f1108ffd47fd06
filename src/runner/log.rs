//! Build logs: one file per build, written as output arrives, secrets
//! masked, capped in size, and followable while the build runs.
