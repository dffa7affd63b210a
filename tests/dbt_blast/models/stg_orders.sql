-- Staging: every column of the source through a CTE, one renamed.
with source as (
    select * from {{ source('shop', 'orders') }}
),
renamed as (
    select id as order_id, email, amount, status from source
)
select * from renamed
