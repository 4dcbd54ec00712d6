%% The dead-letter workers of a broker's or cluster's quorum queues (RabbitMQ 3.10), for
%% `lepus dead-letter-workers [--restart]`, or rabbitmqctl eval on any node with this file's text
%% as the one argument after a first expression that binds Restart: Restart = false, to print;
%% Restart = true, to start missing workers again. It reads the broker's internal state, which
%% can change between RabbitMQ versions: a queue it cannot read prints "query failed".
%%
%% For every quorum queue, of every vhost, that dead-letters at least once (Lepus's delay
%% levels, and the quorum worker queues), read on its leader: messages waiting to be dead-lettered
%% (discarded), those handed to the queue's dead-letter worker and not confirmed yet
%% (checked_out), and the worker registered with the queue, alive or not.
%%
%% A queue whose registered worker is not alive, or that has none and holds messages, passes
%% nothing on until its next leader election (RELIABILITY.md, Cluster). With Restart = true,
%% a worker is started again on the leader of each such queue, which is what that election
%% would do, and one line is printed per worker started. A queue with nothing to pass on yet
%% is included: it can be the next hop of one that has.
%%
%% Those workers run under one supervisor per node, rabbit_fifo_dlx_sup. It gives up after two
%% worker restarts within 5 s, and RabbitMQ does not start it again (a transient child that
%% ends with shutdown; rabbitmq-server#16652): every queue led by that node is then left without
%% a worker, and no worker can be started there. So first, on each running node: its supervisor,
%% and with Restart = true, the supervisor started again where it is gone (what the node's
%% boot does), one line per node where it was gone.
lists:foreach(fun(Node) ->
  case {rpc:call(Node, erlang, whereis, [rabbit_fifo_dlx_sup], 5000), Restart} of
    {undefined, true} ->
      %% Its child spec stays with rabbit_sup, terminated: restart it (start it if not there).
      Started = case rpc:call(Node, supervisor, restart_child, [rabbit_sup, rabbit_fifo_dlx_sup], 10000) of
        {error, not_found} -> rpc:call(Node, rabbit_sup, start_supervisor_child, [rabbit_fifo_dlx_sup], 10000);
        R -> R
      end,
      io:format("~s dead-letter supervisor gone, started: ~w~n", [Node, Started]);
    {undefined, false} ->
      io:format("~s dead-letter supervisor gone~n", [Node]);
    {Sup, _} when is_pid(Sup) -> ok;
    {Other, _} ->
      io:format("~s dead-letter supervisor not read: ~w~n", [Node, Other])
  end
end, rabbit_nodes:all_running()),
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
end, [Q || V <- rabbit_vhost:list_names(),
           Q <- rabbit_amqqueue:list(V),
           amqqueue:get_type(Q) =:= rabbit_quorum_queue,
           rabbit_misc:table_lookup(amqqueue:get_arguments(Q), <<"x-dead-letter-strategy">>)
             =:= {longstr, <<"at-least-once">>}]).
