with

source as (

    select * from {{ source('raw', 'flights') }}

),

renamed as (

    select
        ---------- ids
        carrier || flight::text || '-' || origin || '-'
            || to_char({{ local_time('scheduled_departure_at') }}, 'YYYYMMDDHH24MI') as flight_id,
        carrier as carrier_code,
        flight as flight_number,
        tailnum as tail_number,
        origin as origin_airport_code,
        dest as dest_airport_code,

        ---------- schedule (local hhmm as published; UTC timestamp computed at extract)
        year as scheduled_year,
        month as scheduled_month,
        day as scheduled_day,
        sched_dep_time as scheduled_departure_hhmm,
        sched_arr_time as scheduled_arrival_hhmm,
        scheduled_departure_at,

        ---------- outcome (null when the flight did not depart or arrive)
        dep_time as actual_departure_hhmm,
        arr_time as actual_arrival_hhmm,
        dep_delay as departure_delay_minutes,
        arr_delay as arrival_delay_minutes,
        air_time as air_time_minutes,

        ---------- route
        distance as distance_miles

    from source

)

select * from renamed
