//! Empty: this package only pins the pristine Pingora sources (see Cargo.toml).
