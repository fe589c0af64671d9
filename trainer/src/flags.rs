//! One spelling of each hyper-parameter: [`params_with_flags!`] defines a parameter struct and
//! its command-line flags from one list of fields, so the field, its flag (`--field-name`, the
//! same doc) and the code that applies the flag cannot drift apart. Defaults live in one place
//! too: the struct's constructor (`Default`, a preset), which serde also reads for fields that
//! a record written before them lacks (a container `#[serde(default)]`).
//!
//! A macro rather than a derive crate: the flags are plain clap derive, and a proc-macro crate
//! for one repetition would be more code than the repetition.

/// Defines `$name` (the fields, with the given attributes) and `$flags`, a `clap::Args` struct
/// with one `Option` flag per field (fields are `Copy`), the field's doc as its help, and:
/// - `apply(&self, p) -> p`: every flag given replaces its field;
/// - `given(&self) -> Vec<&'static str>`: the fields whose flag was given.
macro_rules! params_with_flags {
    (
        $(#[$meta:meta])*
        pub struct $name:ident;
        $(#[$fmeta:meta])*
        pub struct $flags:ident;
        {
            $( $(#[doc = $doc:literal])* $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        $(#[$fmeta])*
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct $flags {
            $( $(#[doc = $doc])* #[arg(long)] pub $field: Option<$ty>, )*
        }

        impl $flags {
            /// `p` with every flag given in place of its field.
            pub fn apply(&self, mut p: $name) -> $name {
                $( if let Some(v) = self.$field { p.$field = v; } )*
                p
            }

            /// The fields whose flag was given, in declaration order.
            pub fn given(&self) -> Vec<&'static str> {
                let mut set = Vec::new();
                $( if self.$field.is_some() { set.push(stringify!($field)); } )*
                set
            }
        }
    };
}

pub(crate) use params_with_flags;

/// `--field-name`, the flag of a field.
pub fn flag_name(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}
