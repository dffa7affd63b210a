-- Joins on email.
select c.id as customer_id, c.name, count(o.order_id) as orders
from {{ source('shop', 'customers') }} as c
join {{ ref('stg_orders') }} as o on o.email = c.email
group by c.id, c.name
