//! `sqlx::migrate!` embeds the migration files at compile time; tell cargo to rebuild when one
//! is added or changed, or a build could silently ship an old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
