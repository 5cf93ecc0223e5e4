with

source as (

    select * from {{ source('raw', 'planes') }}

),

renamed as (

    select
        ---------- ids
        tailnum as tail_number,

        ---------- aircraft
        year as year_built,
        type as aircraft_type,
        manufacturer,
        model,
        engines as engine_count,
        engine as engine_type,
        seats as seat_count,
        speed as cruise_speed_mph

    from source

)

select * from renamed
