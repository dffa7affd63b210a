select id, email, amount, status from {{ source('mend', 'orders') }}
