-- Every column of the source, whatever they are.
select * from {{ source('shop', 'orders') }}
