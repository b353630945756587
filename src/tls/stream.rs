//! One TCP connection with its rustls session, driven by hand.
