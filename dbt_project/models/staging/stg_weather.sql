with

source as (

    select * from {{ source('raw', 'weather') }}

),

renamed as (

    select
        ---------- ids
        origin || '-' || to_char(time_hour at time zone 'UTC', 'YYYYMMDDHH24') as weather_observation_id,
        origin as origin_airport_code,
        time_hour as observed_at,

        ---------- measurements
        temp as temperature_f,
        dewp as dewpoint_f,
        humid as humidity_pct,
        wind_dir as wind_direction_deg,
        wind_speed as wind_speed_mph,
        wind_gust as wind_gust_mph,
        precip as precipitation_in,
        pressure as pressure_mb,
        visib as visibility_miles

    from source

)

select * from renamed
