use super::*;

#[test]
fn outages_are_retried_and_refusals_are_not() {
    assert_eq!(StoreError::Sql(sqlx::Error::PoolTimedOut).next(), Next::Retry);
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    assert_eq!(StoreError::Sql(sqlx::Error::Io(io)).next(), Next::Retry);
    assert_eq!(StoreError::Invalid("a plan that does not apply".into()).next(), Next::Fatal);
    assert_eq!(StoreError::Url("mysql://x".into()).next(), Next::Fatal);
    assert_eq!(StoreError::Sql(sqlx::Error::RowNotFound).next(), Next::Fatal);
}
