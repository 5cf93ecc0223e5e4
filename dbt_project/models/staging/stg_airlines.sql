with

source as (

    select * from {{ source('raw', 'airlines') }}

),

renamed as (

    select
        carrier as carrier_code,
        name as carrier_name

    from source

)

select * from renamed
