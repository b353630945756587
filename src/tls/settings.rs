//! Reading `tls_cert`, `tls_key` and `tls_ca` into a [`HerdTls`].
