//! Steps as subprocesses: a cleared environment, stdin from /dev/null, a
//! process group of their own, output streamed to the log, and a kill
//! sequence that leaves no process of the step behind.
