with

flights as (

    select * from {{ ref('stg_flights') }}

),

planes as (

    select * from {{ ref('stg_planes') }}

),

outcomes as (

    select
        *,
        -- no departure or no arrival recorded: the flight was cancelled
        (actual_departure_hhmm is null or actual_arrival_hhmm is null) as is_cancelled
    from flights

),

final as (

    select
        ---------- ids
        outcomes.flight_id,
        outcomes.carrier_code,
        outcomes.flight_number,
        outcomes.tail_number,
        outcomes.origin_airport_code,
        outcomes.dest_airport_code,
        outcomes.origin_airport_code || '-' || outcomes.dest_airport_code as route_code,

        ---------- schedule (known long before departure)
        outcomes.scheduled_departure_at,
        extract(hour from {{ local_time('outcomes.scheduled_departure_at') }})::int
            as scheduled_departure_hour_local,
        extract(month from {{ local_time('outcomes.scheduled_departure_at') }})::int as month,
        -- ISO day of week: 1 = Monday ... 7 = Sunday
        extract(isodow from {{ local_time('outcomes.scheduled_departure_at') }})::int as day_of_week,
        outcomes.distance_miles,

        ---------- aircraft (null when the tail number is not in planes)
        planes.year_built as plane_year_built,
        planes.seat_count as plane_seats,

        ---------- outcome and label (known only at outcome_known_at)
        outcomes.is_cancelled,
        case when not outcomes.is_cancelled then outcomes.arrival_delay_minutes end as arrival_delay_minutes,
        -- late 15+ minutes, cancelled, or diverted (arrived with no arrival delay recorded)
        (
            outcomes.is_cancelled
            or outcomes.arrival_delay_minutes is null
            or outcomes.arrival_delay_minutes >= 15
        ) as is_delayed,
        case
            when outcomes.is_cancelled then outcomes.scheduled_departure_at
            else outcomes.scheduled_departure_at
                + make_interval(
                    mins => coalesce(outcomes.departure_delay_minutes, 0)
                        + coalesce(outcomes.air_time_minutes, 0)
                        + 30
                )
        end as outcome_known_at,

        ---------- lineage
        {{ loaded_at('flights') }} as created_at

    from outcomes
    left join planes on outcomes.tail_number = planes.tail_number

)

select * from final
