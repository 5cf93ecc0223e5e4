with

weather as (

    select * from {{ ref('stg_weather') }}

),

deduplicated as (

    -- one row per airport and UTC hour: keep the report with the most measurements
    select distinct on (origin_airport_code, observed_at) *
    from weather
    order by
        origin_airport_code,
        observed_at,
        (
            (temperature_f is null)::int + (wind_speed_mph is null)::int
            + (pressure_mb is null)::int + (visibility_miles is null)::int
        )

),

final as (

    select
        ---------- ids
        weather_observation_id,
        origin_airport_code,
        observed_at,

        ---------- measurements
        temperature_f,
        dewpoint_f,
        humidity_pct,
        wind_direction_deg,
        -- the source has a 1048 mph reading: speeds no surface wind reaches are sensor errors
        case when wind_speed_mph <= 150 then wind_speed_mph end as wind_speed_mph,
        wind_gust_mph,
        precipitation_in,
        pressure_mb,
        visibility_miles,

        ---------- lineage
        {{ loaded_at('weather') }} as created_at

    from deduplicated

)

select * from final
