-- Transforms amount, groups by status, filters on amount.
select status, count(*) as orders, sum(amount) as revenue
from {{ ref('stg_orders') }}
where amount > 0
group by status
