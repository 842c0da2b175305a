//! `ntk adapt --distributed`: the training rows split across ranks, the processes of
//! `mpirun -np N` (the `mpi` feature) or `--threads N` threads of one process.
//!
//! Each rank reads only its share of TRAIN.csv ([`TableShare`]: the bytes after the header
//! split evenly, each line to the rank holding its first byte) and the whole of TEST.csv
//! (test points are replicated). The ranks condition one [`DistributedNtkGp`], fitting the
//! free hyper-parameters together, and predict together; rank 0 writes OUT.csv and the
//! `--json` object in the format of a single-process run, then prints one line per rank:
//! its rows, its seconds in set-up, fit, solve and prediction, and the share of the fit and
//! solve spent in all-reduce.
//!
//! Errors on one rank (a bad line in its share, a plan that does not fit its memory) are
//! agreed on before the first product, so every rank stops, none waits in an all-reduce.

use std::time::Instant;

use burn::prelude::Backend;
use krylov::comm::{Communicator, LocalGroup, all_gather};
use nalgebra::DVector;
use ntk_gp::distributed::{DistributedNtkGp, DistributedParams};
use ntk_gp::strategy::Strategy;

use crate::app::{
    AdaptArgs, LikelihoodArg, StrategyArg, Summary, Task, check_flags, check_lml, check_one_output,
    check_task, load, mean_function, noise_start, param, plan, scored, time_limit, warn_about_fit,
};
use crate::error::CliError;
use crate::memory;
use crate::output::{refuse_overwriting, write_atomically};
use crate::progress::Progress;
use crate::table::{TableShare, read_table};

/// Runs `ntk adapt --distributed` on the ranks of `--threads N`, of `mpirun` (with the `mpi`
/// feature), or of this process alone. With threads, returns the first rank's own error.
pub(crate) fn adapt<B: Backend>(args: &AdaptArgs, dev: &B::Device) -> Result<(), CliError>
where
    B::FloatElem: krylov::Scalar,
{
    refuse_what_is_not_sharded(args)?;
    if let Some(threads) = args.threads {
        if threads == 0 {
            return Err(CliError::Usage("--threads must be at least 1".into()));
        }
        let results = LocalGroup::run(threads, |comm| adapt_rank::<B, _>(args, dev, comm));
        // One process, one message: the first rank's own error, not another's "stopped".
        let mut errors: Vec<CliError> = results.into_iter().filter_map(Result::err).collect();
        let own = errors
            .iter()
            .position(|e| !matches!(e, CliError::OtherRanks { .. }));
        return match own {
            Some(i) => Err(errors.swap_remove(i)),
            None => errors.into_iter().next().map_or(Ok(()), Err),
        };
    }
    #[cfg(feature = "mpi")]
    {
        krylov::comm::with_world(|comm| adapt_rank::<B, _>(args, dev, comm)).unwrap_or_else(|| {
            Err(CliError::Usage(
                "MPI was already initialized in this process".into(),
            ))
        })
    }
    #[cfg(not(feature = "mpi"))]
    {
        if krylov::comm::launched_by_mpirun() {
            return Err(CliError::Usage(
                "started by mpirun, but this ntk was built without the `mpi` feature (each \
                 process would run alone): build it with `cargo build --release -p ntk-cli \
                 --features mpi`, or use --threads N"
                    .into(),
            ));
        }
        adapt_rank::<B, _>(args, dev, krylov::comm::SingleProcess)
    }
}

/// The flags `--distributed` cannot honour, refused before anything is read.
fn refuse_what_is_not_sharded(args: &AdaptArgs) -> Result<(), CliError> {
    if args.likelihood == LikelihoodArg::Categorical {
        return Err(CliError::Usage(
            "--distributed adapts regression (--likelihood gaussian); a categorical \
             likelihood runs on one process"
                .into(),
        ));
    }
    match args.model.strategy {
        StrategyArg::Auto | StrategyArg::Function => Ok(()),
        _ => Err(CliError::Usage(
            "--distributed runs the matrix-free function-space strategy (--strategy auto or \
             function): the dense and parameter-space strategies are not sharded"
                .into(),
        )),
    }
}

/// `r` on this rank, agreed with every rank: an error on any rank stops all of them (those
/// without one of their own report which ranks failed).
fn agree<T, C: Communicator>(comm: &C, r: Result<T, CliError>) -> Result<T, CliError> {
    let code = r.as_ref().err().map_or(0, CliError::exit_code);
    let codes = all_gather(comm, &[f64::from(code)]);
    let failed: Vec<usize> = (0..codes.len()).filter(|&q| codes[q][0] > 0.0).collect();
    match r {
        Err(e) => Err(e),
        Ok(v) if failed.is_empty() => Ok(v),
        Ok(_) => Err(CliError::OtherRanks {
            code: codes.iter().map(|c| c[0] as u8).max().unwrap_or(1),
            ranks: failed,
        }),
    }
}

/// One rank's part of `ntk adapt --distributed` (collective), its errors named by rank.
fn adapt_rank<B: Backend, C: Communicator>(
    args: &AdaptArgs,
    dev: &B::Device,
    comm: C,
) -> Result<(), CliError>
where
    B::FloatElem: krylov::Scalar,
{
    let rank = comm.rank();
    run_rank::<B, C>(args, dev, comm).map_err(|e| match e {
        e @ CliError::OtherRanks { .. } => e,
        e if rank == 0 => e,
        e => CliError::Rank {
            rank,
            source: Box::new(e),
        },
    })
}

/// [`adapt_rank`]'s work: read this rank's share, agree, fit, predict, and on rank 0 write.
fn run_rank<B: Backend, C: Communicator>(
    args: &AdaptArgs,
    dev: &B::Device,
    comm: C,
) -> Result<(), CliError>
where
    B::FloatElem: krylov::Scalar,
{
    let t0 = Instant::now();
    let m = &args.model;
    let (rank, ranks) = (comm.rank(), comm.size());
    // This rank's share of the training file (and the line ends in it, to number lines).
    let (share, limit) = agree(
        &comm,
        (|| {
            let limit = check_flags(m)?;
            if let Some(out) = &args.output {
                refuse_overwriting(out, &[&args.train, &args.test, &m.model])?;
            }
            Ok((TableShare::read(&args.train, rank, ranks)?, limit))
        })(),
    )?;
    let line_ends = all_gather(&comm, &[share.line_ends() as f64]);
    let lines_before = line_ends[..rank].iter().map(|v| v[0] as usize).sum();
    // Then its rows, the test file, the model and the plan, as on one process.
    let (task, network, plan) = agree(
        &comm,
        (|| {
            let train = share.parse(&args.train, &m.target, true, lines_before)?;
            let test = read_table(&args.test, &m.target, false)?;
            let y = train
                .complete_target()
                .expect("a training file has every target");
            let task = Task {
                train,
                test,
                y,
                paths: [args.train.clone(), args.test.clone()],
            };
            let model = load(m)?;
            check_task(&task, &crate::app::Inputs::of_model(&model))?;
            let network = model.network::<B>(dev)?;
            check_one_output(&network, &m.model)?;
            let mut sharded = m.clone();
            sharded.strategy = StrategyArg::Function;
            let mut plan = plan(
                &sharded,
                &network,
                limit,
                task.y.len(),
                task.test.inputs.nrows(),
            )?;
            plan.reason = match m.strategy {
                StrategyArg::Auto => format!(
                    "MatrixFree over {ranks} ranks (--distributed shards the matrix-free \
                     function-space strategy only)"
                ),
                _ => format!("MatrixFree as asked, over {ranks} ranks"),
            };
            Ok((task, network, plan))
        })(),
    )?;
    let params = DistributedParams {
        noise: param(
            "--noise",
            m.noise.as_deref().unwrap_or("fit"),
            noise_init(&comm, &task.y),
        )?,
        prior_scale: param("--prior-scale", &m.prior_scale, 1.0)?,
        mean: mean_function(m),
        time_limit: time_limit(m)?,
        ..DistributedParams::default()
    };
    let progress = Progress::start(String::new(), m.quiet || rank != 0);
    progress.set_message(format!(
        "fitting: MatrixFree over {ranks} ranks, {} rows here, p = {}, about {} per rank",
        task.y.len(),
        plan.size.params,
        memory::format_bytes(plan.estimated_bytes)
    ));
    let t1 = Instant::now();
    let gp = DistributedNtkGp::new(network, &task.train.inputs, &task.y, &params, comm.clone())?;
    let seconds_fit = t1.elapsed().as_secs_f64();
    let lml = gp.log_marginal_likelihood();
    check_lml(lml, gp.hyper())?;
    progress.set_message(format!(
        "predicting {} test points over {ranks} ranks",
        task.test.inputs.nrows()
    ));
    let t2 = Instant::now();
    let pred = gp.predict(&task.test.inputs)?;
    let seconds_predict = t2.elapsed().as_secs_f64();
    drop(progress);
    let per_rank = rank_lines(&comm, &gp, task.y.len(), seconds_predict);
    if rank != 0 {
        return Ok(());
    }
    let scored = scored(&task, &pred, gp.hyper().noise, seconds_predict)?;
    match &args.output {
        Some(path) => write_atomically(path, scored.csv.as_bytes())?,
        None => print!("{}", scored.csv),
    }
    if args.json {
        let summary = Summary {
            strategy: Strategy::MatrixFree,
            reason: plan.reason.clone(),
            hyper: gp.hyper(),
            constant_mean: gp.constant_mean(),
            log_marginal_likelihood: lml,
            logdet_std_error: Some(gp.log_det().std_error),
            fit: gp.fit_report(),
            n_train: gp.n(),
            n_params: gp.n_params(),
            seconds_fit,
        };
        println!("{}", summary.json(args, &task, &plan, &scored, t0));
    } else if let Some(m) = &scored.metrics {
        eprintln!("ntk: {m}");
    }
    for line in per_rank {
        eprintln!("ntk: {line}");
    }
    warn_about_fit(gp.fit_report(), "");
    Ok(())
}

/// Where a fitted σ² starts: half the sample variance of all ranks' targets (as on one
/// process), from all-reduced sums.
fn noise_init<C: Communicator>(comm: &C, y: &DVector<f64>) -> f64 {
    let mut s = [y.len() as f64, y.sum()];
    comm.all_reduce_sum(&mut s);
    let mean = s[1] / s[0];
    let mut ss = [y.iter().map(|v| (v - mean).powi(2)).sum::<f64>()];
    comm.all_reduce_sum(&mut ss);
    noise_start(ss[0] / s[0])
}

/// One line per rank (collective): rows, seconds of each phase, and the all-reduce share.
fn rank_lines<B: Backend, C: Communicator>(
    comm: &C,
    gp: &DistributedNtkGp<B, C>,
    rows: usize,
    seconds_predict: f64,
) -> Vec<String>
where
    B::FloatElem: krylov::Scalar,
{
    let t = gp.timings();
    let gathered = all_gather(
        comm,
        &[
            rows as f64,
            t.setup_s,
            t.fit_s,
            t.precond_s + t.solve_s,
            seconds_predict,
            t.fit_comm_s + t.comm_s,
            (t.fit_comm_bytes + t.precond_comm_bytes + t.comm_bytes) as f64,
        ],
    );
    gathered
        .iter()
        .enumerate()
        .map(|(r, v)| {
            let busy = v[2] + v[3];
            format!(
                "rank {r}: {} rows, set-up {:.2} s, fit {:.2} s, solve {:.2} s, predict {:.2} s; \
                 all-reduce {:.1} % of fit and solve ({})",
                v[0] as usize,
                v[1],
                v[2],
                v[3],
                v[4],
                100.0 * v[5] / busy.max(1e-12),
                memory::format_bytes(v[6])
            )
        })
        .collect()
}
