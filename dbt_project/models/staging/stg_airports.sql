with

source as (

    select * from {{ source('raw', 'airports') }}

),

renamed as (

    select
        ---------- ids
        faa as airport_code,
        name as airport_name,

        ---------- location
        lat as latitude,
        lon as longitude,
        alt as altitude_ft,
        tz as utc_offset_hours,
        dst as dst_rule,
        tzone as time_zone

    from source

)

select * from renamed
