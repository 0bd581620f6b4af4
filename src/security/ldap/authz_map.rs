//! `cachedLDAPAuthorizationMap`: destination entries loaded from LDAP.
