//! The per-store admin token Secret: created once with a random token,
//! never rewritten (members read it at start; changing it would lock the
//! operator out of running members).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use rand::Rng;

use super::object_meta;
use super::pod::ADMIN_TOKEN_KEY;
use crate::labels;
use crate::validate::ValidatedStore;

/// A new random token: 32 bytes, hex.
pub fn new_admin_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Secret holding `token` for `store`'s members.
pub fn admin_token_secret(store: &ValidatedStore, token: &str) -> Secret {
    Secret {
        metadata: object_meta(store, labels::admin_token_secret_name(&store.name)),
        string_data: Some(BTreeMap::from([(
            ADMIN_TOKEN_KEY.to_string(),
            token.to_string(),
        )])),
        type_: Some("Opaque".to_string()),
        ..Secret::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::build::test_support::store;

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (new_admin_token(), new_admin_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn the_secret_is_owned_by_the_store() {
        let secret = admin_token_secret(&store("  {}"), "t0k");
        let meta = &secret.metadata;
        assert!(meta.name.as_deref().unwrap().ends_with("-admin-token"));
        assert_eq!(meta.owner_references.as_ref().unwrap()[0].uid, "u-1");
        assert_eq!(secret.string_data.unwrap()[ADMIN_TOKEN_KEY], "t0k");
    }
}
