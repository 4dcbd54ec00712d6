%% The dead-letter workers of a cluster's quorum queues (RabbitMQ 3.10), for rabbitmqctl eval
%% on any node, with this file's text as the one argument after a first expression that binds
%% Restart: Restart = false, to print; Restart = true, to start missing workers again.
%%
%% For every quorum queue of vhost / that dead-letters at least once (Lepus's delay levels, and
%% the quorum worker queues), read on its leader: messages waiting to be dead-lettered
%% (discarded), those handed to the queue's dead-letter worker and not confirmed yet
%% (checked_out), and the worker registered with the queue, alive or not.
%%
%% A queue whose registered worker is not alive, or that has none and holds messages, passes
%% nothing on until its next leader election (RELIABILITY.md, Cluster). With Restart = true,
%% a worker is started again on the leader of each such queue, which is what that election
%% would do, and one line is printed per worker started. A queue with nothing to pass on yet
%% is included: it can be the next hop of one that has.
lists:foreach(fun(Q) ->
  QName = amqqueue:get_name(Q),
  {resource, _, queue, N} = QName,
  {RaName, LNode} = amqqueue:get_pid(Q),
  Query = fun(S) ->
    [D] = [E || E <- tuple_to_list(S), is_tuple(E), tuple_size(E) =:= 6,
                element(1, E) =:= rabbit_fifo_dlx],
    {rabbit_fifo_dlx:overview(D), case element(2, D) of undefined -> none; C -> element(2, C) end}
  end,
  case rpc:call(LNode, ra, local_query, [{RaName, LNode}, Query, 5000], 10000) of
    {ok, {_, {Ov, Pid}}, _} ->
      Discarded = maps:get(num_discarded, Ov),
      Checked = maps:get(num_discard_checked_out, Ov),
      Alive = Pid =/= none andalso rpc:call(node(Pid), erlang, is_process_alive, [Pid], 5000) =:= true,
      Missing = (Pid =/= none andalso not Alive) orelse (Pid =:= none andalso Discarded + Checked > 0),
      case {Restart, Missing} of
        {true, true} ->
          Started = rpc:call(LNode, supervisor, start_child, [rabbit_fifo_dlx_sup, [QName]], 10000),
          io:format("~s leader=~s held=~b worker=~w started: ~w~n",
                    [N, LNode, Discarded + Checked, Pid, Started]);
        {true, false} -> ok;
        {false, _} ->
          io:format("~s leader=~s discarded=~b checked_out=~b worker=~w alive=~w~n",
                    [N, LNode, Discarded, Checked, Pid, Alive])
      end;
    Other ->
      io:format("~s leader=~s query failed: ~w~n", [N, LNode, Other])
  end
end, [Q || Q <- rabbit_amqqueue:list(<<"/">>),
           amqqueue:get_type(Q) =:= rabbit_quorum_queue,
           rabbit_misc:table_lookup(amqqueue:get_arguments(Q), <<"x-dead-letter-strategy">>)
             =:= {longstr, <<"at-least-once">>}]).
