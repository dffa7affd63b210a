-- Reads the order id only.
select order_id from {{ ref('stg_orders') }}
